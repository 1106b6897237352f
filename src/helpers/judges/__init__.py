"""Judges: the backend contract (``base``), the registry of ``params/models/*.yaml``
(``registry``), model-free baselines (``cpu``) and the model backends (imported lazily)."""

from helpers.judges.base import Backend, JudgeSpec, Media, PairJudge, Request, Response
from helpers.judges.registry import list_judges, load_spec, make_backend, make_pair_judge

__all__ = [
    "Backend", "JudgeSpec", "Media", "PairJudge", "Request", "Response",
    "list_judges", "load_spec", "make_backend", "make_pair_judge",
]
