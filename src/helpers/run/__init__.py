"""Running judges: from a judge and a set of pairs to rows in the predictions store.

Modules, each with one job:

- ``engine``      one run: a frozen, validated ``RunConfig`` -> every strategy, order and round
                  of one judge into the store (``engine.run``, what ``notebooks/01_infer`` calls).
- ``strategies``  the paper's strategies S1-S4 as requests to backends, with description sharing.
- ``store``       a run folder: the resumable, locked, append-only predictions; the one row schema
                  ``PredictionRow`` (built only by ``prediction_row``, checked on every read by
                  ``checked_rows``); the versioned ``RunManifest`` (read only through
                  ``read_manifest``, typed and checked); and ``RunSession``, the one lifecycle of a
                  run folder (open, checkpoint, fail, close; overwrite = move aside) that the engine,
                  the importer and the tournament write through.
- ``results``     the store read for analysis: stored rows checked, scored against the data, and
                  a finished run's own numbers (parse report, closing table).
- ``identity``    what a run folder holds (judge, prompts, data hashes, seed...), so a changed
                  input never resumes into stale predictions.
- ``provenance``  which code and packages produced a result (git revision, package versions).
- ``launch``      many runs: grids of notebook runs (``python -m helpers.run GRID``) and shards
                  of judging, on one scheduler (one worker per GPU) or on Ray.
"""
