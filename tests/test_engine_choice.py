"""Issue 18, which engine runs: transformers and vLLM decode differently (numerics, and a sampling
judge's random stream), so a run folder made on one engine is never resumed on the other, and a
description one engine wrote is never reused by a run on the other. Driven through
``engine.run`` with the real engine resolution (``resolve_backend``), the engines' classes
replaced by the fake backend."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
from fake_backend import FAKE_LLM, FAKE_MLLM

from helpers.judges import registry
from helpers.run import engine
from helpers.run.identity import IdentityError
from helpers.run.store import read_jsonl

VLLM_JUDGE = dataclasses.replace(FAKE_MLLM, options={**FAKE_MLLM.options, "engine": "vllm"})
"""A local judge whose YAML names vLLM as the paper's engine."""


@pytest.fixture
def engines(monkeypatch):
    """Both local engines served by the fake backend; ``engines(gpu=...)`` says whether vLLM can run."""
    for kind in ("transformers", "vllm"):
        monkeypatch.setitem(registry.BACKEND_CLASSES, kind, "fake_backend:FakeBackend")

    def set_gpu(gpu: bool) -> None:
        monkeypatch.setattr(registry, "vllm_available", lambda: gpu)
        monkeypatch.setattr(registry, "_gpu_present", lambda: gpu)
    return set_gpu


def toy_pairs(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"name": [f"s{i:02d}" for i in range(n)], "a1": [f"Angry {i}." for i in range(n)],
                         "a2": [f"Calm and happy {i}." for i in range(n)], "preference": (["a1", "a2"] * n)[:n]})


def run(store: Path, strategy: str, spec=VLLM_JUDGE, **kwargs) -> pd.DataFrame:
    settings = {"pairs": toy_pairs(), "rounds": 1, "output_dir": store, "progress": False, "judge_llm": FAKE_LLM,
                "dataset": "toy"} | kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the fallback warning has its own test
        return engine.run(spec, strategy, **settings)


def folder(store: Path, strategy: str) -> Path:
    suffix = f"__llm={FAKE_LLM.name}" if strategy in ("S3", "S4") else ""
    return store / f"{VLLM_JUDGE.name}__{strategy}__text__toy{suffix}"


def manifest(store: Path, strategy: str) -> dict:
    return json.loads((folder(store, strategy) / "manifest.json").read_text())


def descriptions(store: Path, strategy: str) -> list[dict]:
    path = folder(store, strategy) / "steps.jsonl"
    return [s for s in read_jsonl(path) if s["step"] == "describe"] if path.exists() else []


def test_a_vllm_judge_without_vllm_runs_on_transformers_with_a_warning_and_records_it(tmp_path, engines):
    engines(gpu=False)
    with pytest.warns(UserWarning, match="its engine is vLLM .* running it on transformers"):
        engine.run(VLLM_JUDGE, "S1", pairs=toy_pairs(), rounds=1, output_dir=tmp_path, progress=False,
                   judge_llm=FAKE_LLM, dataset="toy")
    assert manifest(tmp_path, "S1")["identity"]["judge"]["engine"] == "transformers"


def test_a_run_made_on_transformers_is_not_resumed_on_vllm_and_the_error_names_the_engine(tmp_path, engines):
    engines(gpu=False)
    run(tmp_path, "S1")  # auto: the paper's vLLM cannot run here, so transformers
    engines(gpu=True)  # the same command on a GPU machine with vLLM
    with pytest.raises(IdentityError, match=r"judge\.engine: 'transformers' -> 'vllm'"):
        run(tmp_path, "S1")
    with pytest.raises(IdentityError, match=r"judge\.engine: 'transformers' -> 'vllm'"):
        run(tmp_path, "S1", engine="vllm")
    again = run(tmp_path, "S1", engine="transformers")  # the engine it was made on resumes it
    assert again.loc[0, "rows_new"] == 0


def test_the_text_llms_engine_is_part_of_an_s3_runs_identity(tmp_path, engines):
    engines(gpu=True)
    run(tmp_path, "S3", engine="vllm", llm_engine="vllm")
    assert manifest(tmp_path, "S3")["identity"]["llm"]["engine"] == "vllm"
    with pytest.raises(IdentityError, match=r"llm\.engine: 'vllm' -> 'transformers'"):
        run(tmp_path, "S3", engine="vllm", llm_engine="transformers")


def test_a_description_written_on_one_engine_is_not_reused_by_a_run_on_the_other(tmp_path, engines):
    """S2 and S3 share the judge's descriptions through the store's steps (one description per
    sample and round): on the same engine S3 writes none, on the other it writes its own."""
    engines(gpu=True)
    run(tmp_path, "S2", engine="transformers")
    written = descriptions(tmp_path, "S2")
    assert len(written) == len(toy_pairs()) and {d["text"] for d in written}

    run(tmp_path / "same", "S2", engine="transformers")
    run(tmp_path / "same", "S3", engine="transformers")
    assert descriptions(tmp_path / "same", "S3") == [], "same engine: the cached descriptions are reused"

    run(tmp_path, "S3", engine="vllm")
    regenerated = descriptions(tmp_path, "S3")
    assert len(regenerated) == len(written), "other engine: every description is made again"
    assert {d["key"] for d in regenerated}.isdisjoint({d["key"] for d in written})
