"""EmoPrefer study helpers, in wings along the data flow.

``data``, ``prompts``, ``paths``  the inputs: annotation CSVs (checked), prompt texts, where things live
``judges/``     who judges: the registry of ``params/models/*.yaml``, backends (transformers, vLLM,
                OpenAI-compatible), media decoding, CPU and learned baselines
``run/``        judging a dataset: engine (a frozen ``RunConfig``), strategies S1-S4, the resumable store,
                run identity, provenance, the grid/shard launcher (``python -m helpers.run``)
``imports``     predictions made elsewhere (the authors' released outputs, any table) into the store
``stats/``      pure computations on prediction tables: metrics, voting, the length confound, Bradley-Terry,
                simulations (imports only ``data``)
``tournament/`` ranking your own description systems with a judge (``python -m helpers.tournament``)
``report/``     the article: the notebooks' preamble, chapter logic, plots, tables, the pandoc renderer
"""

__version__ = "0.1.0"
