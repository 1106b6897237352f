"""Judges: everything that turns a request (a prompt, maybe media) into an answer.

Modules, each with one job:

- ``base``        the contract between the engine and backends (``Request``, ``Response``,
                  ``Backend``, ``PairJudge``, ``JudgeSpec``) and the study's ``STRATEGIES``.
- ``registry``    judges by name: ``params/models/*.yaml`` -> ``JudgeSpec`` -> backend or pair judge.
- ``families``    what each model family accepts (audio, video, frames, chat format), for every backend.
- ``decoding``    a judge's decoding protocol, stated once and translated per backend.
- ``hf``          the transformers backend (in-process, any machine).
- ``vllm``        the vLLM offline backend (GPU boxes).
- ``openai``      any OpenAI-compatible chat-completions endpoint.
- ``media``       decoding videos and audio with PyAV into the arrays processors take.
- ``cpu``         model-free baselines (length, random, always a1).
- ``learned``     baselines that learn from the human labels (source: the writing model; MiniLM reward models).
- ``embeddings``  sentence embeddings of descriptions, cached on disk (for ``learned``).

The model backends are imported lazily (by ``registry``), so importing judges needs no torch.
"""

from helpers.judges.base import Backend, JudgeSpec, Media, PairJudge, Request, Response
from helpers.judges.registry import list_judges, load_spec, make_backend, make_pair_judge

__all__ = [
    "Backend", "JudgeSpec", "Media", "PairJudge", "Request", "Response",
    "list_judges", "load_spec", "make_backend", "make_pair_judge",
]
