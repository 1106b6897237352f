"""Running judges: from a judge and a set of pairs to rows in the predictions store.

Modules, each with one job:

- ``engine``      one run: a frozen, validated ``RunConfig`` -> every strategy, order and round
                  of one judge into the store (``engine.run``, what ``notebooks/01_infer`` calls).
- ``strategies``  the paper's strategies S1-S4 as requests to backends, with description sharing.
- ``store``       the resumable, locked, append-only store: one folder per run.
- ``identity``    what a run folder holds (judge, prompts, data hashes, seed...), so a changed
                  input never resumes into stale predictions.
- ``provenance``  which code and packages produced a result (git revision, package versions).
- ``launch``      many runs: grids of notebook runs (``python -m helpers.run GRID``) and shards
                  of judging, on one scheduler (one worker per GPU) or on Ray.
"""
