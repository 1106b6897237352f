"""Out of memory and bad media, recorded, never silent (issue 29, item 2).

An out-of-memory error in either engine's generate halves the batch (down to 1) and the run
completes, each halving in the manifest; an undecodable clip becomes one ``media_error`` row that
the metrics leave out, counts as ``media_error_n`` and a resume does not retry unless asked."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from fake_vllm import FakeVLLM
from tiny_models import VIDEO_PIXELS, write_mp4

from helpers.judges import hf
from helpers.judges.base import BackendError, JudgeSpec
from helpers.run import engine, results
from helpers.run.store import read_predictions
from helpers.stats.metrics import METRICS_COLUMNS, metrics_table

pytestmark = pytest.mark.usefixtures("offline")  # text_lm, omni: tests/conftest.py


def pairs(n: int, names=None) -> pd.DataFrame:
    names = names or [f"p{i:02d}" for i in range(n)]
    return pd.DataFrame({"name": names, "a1": ["happy"] * n, "a2": ["sad"] * n,
                         "preference": ["a1", "a2", "same", "a1", "a2"][:n] if n <= 5 else ["a1"] * n})


def text_judge(checkpoint, **fields) -> JudgeSpec:
    return JudgeSpec(name="tiny_text", family="text", backend="local", checkpoint=str(checkpoint), input_type="text",
                     generation={"max_new_tokens": 2}, options={"device": "cpu"}, **fields)


def manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_transformers_out_of_memory_halves_the_batch_records_each_halving_and_completes(text_lm, tmp_path,
                                                                                        monkeypatch):
    real, sizes = hf.TransformersBackend._generate_batch, []

    def tight(self, batch):  # a GPU that holds one request at a time
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, batch)

    monkeypatch.setattr(hf.TransformersBackend, "_generate_batch", tight)
    summary = engine.run(text_judge(text_lm, batch_size=4), "S1", pairs=pairs(3), order="both", rounds=1,
                         output_dir=tmp_path, dataset="toy", engine="transformers", progress=False)
    assert summary.loc[0, "status"] == "complete" and len(read_predictions(tmp_path)) == 6
    # 6 requests at batch 4: [4] fails -> [2] fails -> 1, 1 and the rest in batches of 1 (the size reached)
    assert sizes == [4, 2, 1, 1, 1, 1, 1, 1]
    backoffs = manifest(tmp_path / summary.loc[0, "run_id"])["sessions"][-1]["oom_backoffs"]
    assert [(b["batch"], b["retry_as"]) for b in backoffs] == [(4, 2), (2, 1)]
    assert all("out of memory" in b["error"] for b in backoffs)


def test_out_of_memory_at_batch_one_fails_naming_the_request_with_the_backoffs_on_record(text_lm, tmp_path,
                                                                                         monkeypatch):
    def never(self, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(hf.TransformersBackend, "_generate_batch", never)
    with pytest.raises(BackendError, match=r"out of GPU memory .* request 'S1\|normal\|r0\|p00' alone"):
        engine.run(text_judge(text_lm, batch_size=2), "S1", pairs=pairs(2), order="normal", rounds=1,
                   output_dir=tmp_path, dataset="toy", engine="transformers", progress=False)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = manifest(folder)
    assert record["status"] == "failed" and [b["batch"] for b in record["sessions"][-1]["oom_backoffs"]] == [2]


def test_vllm_out_of_memory_halves_the_chunk_and_completes(text_lm, tmp_path, monkeypatch):
    fake = FakeVLLM().install(monkeypatch)
    generate = fake.module.LLM.generate

    def tight(self, prompts, params, use_tqdm=False):
        if len(prompts) > 8:
            fake.calls.append(-len(prompts))  # a failed call, marked negative
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return generate(self, prompts, params, use_tqdm)

    monkeypatch.setattr(fake.module.LLM, "generate", tight)
    judge = JudgeSpec(name="tiny_vllm", family="qwen25", backend="vllm", checkpoint=str(text_lm), input_type="text")
    summary = engine.run(judge, "S1", pairs=pairs(20), rounds=1, output_dir=tmp_path, dataset="toy", engine="vllm",
                         progress=False)
    assert summary.loc[0, "status"] == "complete" and len(read_predictions(tmp_path)) == 40
    assert fake.calls == [-40, -20, -10, *[5] * 8], "40 -> 20 -> 10 -> 5, then chunks of 5"
    backoffs = manifest(tmp_path / summary.loc[0, "run_id"])["sessions"][-1]["oom_backoffs"]
    assert [(b["batch"], b["retry_as"]) for b in backoffs] == [(40, 20), (20, 10), (10, 5)]


@pytest.mark.slow
def test_a_truncated_mp4_is_one_media_error_row_left_out_of_the_metrics_and_not_retried_on_resume(omni, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for name in ("c0", "c1", "c2"):
        write_mp4(media / f"{name}.mp4")
    whole = (media / "c1.mp4").read_bytes()
    (media / "c1.mp4").write_bytes(whole[: len(whole) // 2])  # cut mid-file: the index at its end is gone
    judge = JudgeSpec(name="tiny_omni", family="qwen25omni", backend="local", checkpoint=str(omni),
                      input_type="audiovideo", batch_size=4, generation={"max_new_tokens": 2},
                      options={"device": "cpu", "video_min_pixels": VIDEO_PIXELS["shortest_edge"],
                               "video_max_pixels": VIDEO_PIXELS["longest_edge"]})
    out = tmp_path / "store"

    def run(**settings):
        return engine.run(judge, "S1", pairs=pairs(3, ["c0", "c1", "c2"]), order="normal", rounds=1,
                          media_dir=media, output_dir=out, dataset="toy", engine="transformers", progress=False,
                          **settings)

    first = run()
    assert first.loc[0, "status"] == "complete" and first.loc[0, "media_error_n"] == 1
    table = read_predictions(out)
    bad = table[table["status"] == "media_error"]
    assert list(bad["name"]) == ["c1"] and bad["pred"].isna().all() and "c1.mp4" in bad["error"].iloc[0]
    closing = results.run_metrics(results.load_run(first, out))
    assert closing.loc[0, "media_error_n"] == 1 and closing.loc[0, "pairs"] == 2, "metrics over the other two"
    scored = results.load_predictions(out)
    assert sorted(scored["name"]) == ["c0", "c2"]
    from helpers.report.chapters import with_media_errors

    csv = with_media_errors(metrics_table(scored, n_boot=10), scored, out)
    assert csv.loc[0, "media_error_n"] == 1
    # right after the agreed metric columns (which end with unparsed_pct and the unrounded WAF the picks use)
    assert list(csv.columns).index("media_error_n") == len(METRICS_COLUMNS)

    again = run()
    assert again.loc[0, "rows_new"] == 0 and not again.loc[0, "calls"], "the broken clip is not retried"
    retried = run(retry_errors=True)
    assert retried.loc[0, "rows_new"] == 1 and retried.loc[0, "media_error_n"] == 1, "asked: tried again, still bad"
    assert len(read_predictions(out)) == 3
    assert len((out / first.loc[0, "run_id"] / "retried_errors.jsonl").read_text().splitlines()) == 1
