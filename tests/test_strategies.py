"""S1–S4: what each strategy sends, what it shares, and how many model calls a grid costs."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from fake_backend import FAKE_LLM, FAKE_MLLM, FakeBackend, expected_calls

from helpers import paths, prompts
from helpers.data import DataError
from helpers.judges.base import JudgeSpec
from helpers.run import engine
from helpers.run.store import StoreError, load_steps, read_predictions

N, R = 5, 2


def toy_pairs(n: int = N) -> pd.DataFrame:
    return pd.DataFrame({
        "name": [f"s{i:02d}" for i in range(n)],
        "a1": [f"The man is\tangry {i}." for i in range(n)],
        "a2": [f"The man is calm and happy, smiling {i}." for i in range(n)],
        "preference": ["a1", "a2", "same", "a2", "a1"][:n] + ["a1"] * max(0, n - 5),
    })


class Recorder:
    """Backend factory that keeps every backend it made."""

    def __init__(self):
        self.made: list[FakeBackend] = []

    def __call__(self, spec: JudgeSpec) -> FakeBackend:
        self.made.append(FakeBackend(spec))
        return self.made[-1]

    def requests(self, judge: str) -> list:
        return [r for b in self.made if b.spec.name == judge for r in b.requests]


def run(tmp_path, recorder, strategy="all", **kwargs):
    kwargs = {"pairs": toy_pairs(), "rounds": R, "output_dir": tmp_path, "progress": False,
              "judge_llm": FAKE_LLM, "engine": recorder, "dataset": "toy"} | kwargs
    return engine.run(FAKE_MLLM, strategy, **kwargs)


def total_calls(summary: pd.DataFrame) -> Counter:
    calls: Counter = Counter()
    for c in summary["calls"]:
        calls.update(c)
    return calls


def test_a_run_config_refuses_unknown_and_invalid_settings_before_anything_runs(tmp_path):
    with pytest.raises(TypeError, match="roundz"):
        engine.run(FAKE_MLLM, "S1", roundz=2, output_dir=tmp_path)
    with pytest.raises(ValueError, match="order must be one of"):
        engine.RunConfig(FAKE_MLLM, order="sideways")
    with pytest.raises(ValueError, match="rounds must be at least 1, got 0"):
        engine.RunConfig(FAKE_MLLM, rounds=0)
    with pytest.raises(ValueError, match="strategy must be one of"):
        engine.RunConfig(FAKE_MLLM, strategy="S5")
    config = engine.RunConfig(FAKE_MLLM, "S1", pairs=toy_pairs(), rounds=1, output_dir=tmp_path, progress=False,
                              engine=FakeBackend, dataset="toy")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rounds = 3
    with pytest.raises(TypeError, match="takes no further settings"):
        engine.run(config, rounds=2)
    assert not any(tmp_path.iterdir())  # nothing was written by any refused call
    assert engine.run(config)["rows"].tolist() == [len(toy_pairs()) * 2]


def test_full_grid_makes_exactly_the_calls_the_sharing_implies(tmp_path):
    recorder = Recorder()
    summary = run(tmp_path, recorder)
    calls = total_calls(summary)
    # by hand: every strategy judges N pairs x 2 orders x R rounds; one description per
    # (sample, round); S4 reasons once per (sample, round, order) then extracts
    assert calls == Counter({"S1": 20, "describe": 10, "S2": 20, "S3": 20, "S4_reason": 20, "S4_extract": 20})
    assert calls == expected_calls(N, R, 2, ["S1", "S2", "S3", "S4"])
    # the paper's code runs each order on its own: per order S1, describe, S2, S3 (reusing that
    # order's descriptions) and S4's two steps, each N x R calls
    paper = 2 * (1 + 1 + 1 + 1 + 2) * N * R
    assert sum(calls.values()) == 11 * N * R < paper
    # the backends saw exactly those requests, every key once
    seen = recorder.requests("fake_mllm") + recorder.requests("fake_llm")
    assert len(seen) == sum(calls.values())
    assert len({r.key for r in seen}) == len(seen)
    assert len(read_predictions(tmp_path)) == 4 * N * 2 * R


def test_descriptions_are_shared_across_orders_and_strategies(tmp_path):
    recorder = Recorder()
    run(tmp_path, recorder)
    table = read_predictions(tmp_path)
    described = table[table["strategy"].isin(["S2", "S3", "S4"])]
    keys = described["steps"].map(lambda s: s["describe"])
    # one description key per (sample, round), whatever the order or strategy
    per_sample_round = described.assign(k=keys).groupby(["name", "round"])["k"].nunique()
    assert (per_sample_round == 1).all()
    steps = pd.DataFrame(load_steps(tmp_path))
    assert (steps["step"] == "describe").sum() == N * R
    assert (steps["step"] == "S4_reason").sum() == N * R * 2


def test_prompts_carry_the_cleaned_texts_and_the_own_description(tmp_path):
    recorder = Recorder()
    run(tmp_path, recorder, rounds=1, order="normal")
    mllm, llm = recorder.requests("fake_mllm"), recorder.requests("fake_llm")
    pair = toy_pairs().iloc[0]
    s1 = next(r for r in mllm if r.key == "S1|normal|r0|s00")
    assert s1.prompt == prompts.build_s1(pair.a1, pair.a2)
    assert "angry 0" in s1.prompt and "\t" not in s1.prompt
    assert s1.system == prompts.prompt("system_omni")
    description = next(r for r in mllm if r.key.startswith("describe|") and "|s00|" in r.key)
    assert description.prompt == prompts.prompt("describe_video")
    own = FakeBackend(FAKE_MLLM).generate([description])[0].text
    s3 = next(r for r in llm if r.key == "S3|normal|r0|s00")
    assert s3.prompt == prompts.build_judge(own, pair.a1, pair.a2)
    assert "\n" not in s3.prompt  # the description's newline was cleaned
    assert s3.media is None and s3.system is None
    s2 = next(r for r in mllm if r.key == "S2|normal|r0|s00")
    assert s2.prompt == s3.prompt and s2.system == s1.system


def test_reverse_order_swaps_texts_and_labels(tmp_path):
    recorder = Recorder()
    run(tmp_path, recorder, strategy="S1", rounds=1)
    by_key = {r.key: r for r in recorder.requests("fake_mllm")}
    pair = toy_pairs().iloc[1]
    assert by_key["S1|reverse|r0|s01"].prompt == prompts.build_s1(pair.a2, pair.a1)
    table = read_predictions(tmp_path).set_index(["order", "name"])
    assert table.loc[("normal", "s01"), "gt"] == "a2"
    assert table.loc[("reverse", "s01"), "gt"] == "a1"
    assert table.loc[("reverse", "s02"), "gt"] == "same"


def test_each_round_is_a_fresh_generation_with_its_own_seed(tmp_path):
    recorder = Recorder()
    run(tmp_path, recorder, strategy="S2", rounds=3, seed=10)
    seeds = {(r.key.split("|")[2] if r.key.startswith("S2") else r.key.split("|")[4], r.seed)
             for r in recorder.requests("fake_mllm")}
    assert seeds == {("r0", 10), ("r1", 11), ("r2", 12)}


def test_predictions_follow_the_parsing_rule(tmp_path):
    recorder = Recorder()
    run(tmp_path, recorder)
    table = read_predictions(tmp_path)
    for row in table.itertuples():
        label, rule = prompts.parse_label(row.raw, text_llm=row.strategy in ("S3", "S4"))
        assert (row.pred, row.parse_rule) == (label, rule)
    assert set(table["pred"]) <= {"a1", "a2", "same"}


def test_rerun_makes_no_calls_and_later_strategies_reuse_stored_descriptions(tmp_path):
    run(tmp_path, Recorder(), strategy="S2")
    again = Recorder()
    assert total_calls(run(tmp_path, again, strategy="S2")) == Counter()
    assert again.made == []  # no model is even loaded when nothing is left to do
    later = Recorder()
    calls = total_calls(run(tmp_path, later, strategy="S3"))
    assert calls == Counter({"S3": N * 2 * R})  # no describe calls: S2's descriptions were reused
    assert [b.spec.name for b in later.made] == ["fake_llm"]


def test_stored_steps_are_reused_only_for_the_same_checkpoints(tmp_path):
    """A judge's name is a label: new weights behind the same name must describe (and reason)
    afresh, while unchanged ones reuse every stored text without a single call."""
    run(tmp_path, Recorder(), strategy="S2")
    new_weights = dataclasses.replace(FAKE_MLLM, checkpoint="retrained")
    regenerated = total_calls(engine.run(new_weights, "S3", pairs=toy_pairs(), rounds=R, output_dir=tmp_path,
                                         progress=False, judge_llm=FAKE_LLM, engine=Recorder(), dataset="toy"))
    assert regenerated == Counter({"describe": N * R, "S3": N * 2 * R})
    unchanged = Recorder()
    assert total_calls(run(tmp_path, unchanged, strategy="S4")) == Counter({"S4_reason": N * 2 * R,
                                                                          "S4_extract": N * 2 * R})
    assert [b.spec.name for b in unchanged.made] == ["fake_llm"]  # S2's descriptions were reused

    # reasoning belongs to the text LLM's weights too
    new_llm = dataclasses.replace(FAKE_LLM, checkpoint="llm-v2")
    assert total_calls(run(tmp_path, Recorder(), strategy="S4", judge_llm=new_llm, run_id="llm_v2")) == \
        Counter({"S4_reason": N * 2 * R, "S4_extract": N * 2 * R})
    assert total_calls(run(tmp_path, Recorder(), strategy="S4", run_id="llm_v1_again")) == \
        Counter({"S4_extract": N * 2 * R})

    steps = pd.DataFrame(load_steps(tmp_path))  # every old entry is kept, none is reused wrongly
    described = steps[steps["step"] == "describe"]
    assert described.groupby("checkpoint").size().to_dict() == {"none": N * R, "retrained": N * R}
    assert steps.loc[steps["step"] == "S4_reason", "llm_checkpoint"].value_counts().to_dict() == \
        {"none": N * 2 * R, "llm-v2": N * 2 * R}


def test_a_run_folder_is_not_resumed_with_other_weights_under_the_same_name(tmp_path):
    """Resuming S1 after swapping the weights behind a judge name would mix two models' answers
    in one table: the engine refuses and says which field changed."""
    run(tmp_path, Recorder(), strategy="S1", limit=2)
    retrained = dataclasses.replace(FAKE_MLLM, checkpoint="retrained")
    with pytest.raises(StoreError, match=r"other checkpoint \(checkpoint='none'\).*new name"):
        engine.run(retrained, "S1", pairs=toy_pairs(), rounds=R, output_dir=tmp_path, progress=False,
                   engine=Recorder(), dataset="toy")
    bigger_batches = dataclasses.replace(FAKE_MLLM, batch_size=7)  # not part of the identity
    assert len(engine.run(bigger_batches, "S1", pairs=toy_pairs(), rounds=R, output_dir=tmp_path, progress=False,
                          engine=Recorder(), dataset="toy")) == 1
    assert len(read_predictions(tmp_path)) == N * 2 * R


def test_an_edited_description_prompt_regenerates_the_descriptions(tmp_path, monkeypatch):
    run(tmp_path / "store", Recorder(), strategy="S2")
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    text = (paths.params_dir() / "prompts.yaml").read_text(encoding="utf-8")
    old = prompts.prompt("describe_video")
    assert text.count(old) == 1
    (root / "params" / "prompts.yaml").write_text(text.replace(old, old + " Be brief."), encoding="utf-8")
    shutil.copytree(paths.params_dir() / "models", root / "params" / "models")
    monkeypatch.setenv("EMOPREFER_ROOT", str(root))
    edited = Recorder()
    assert total_calls(run(tmp_path / "store", edited, strategy="S3")) == Counter({"describe": N * R, "S3": N * 2 * R})
    assert {r.prompt for r in edited.requests("fake_mllm")} == {old + " Be brief."}
    monkeypatch.delenv("EMOPREFER_ROOT")
    assert total_calls(run(tmp_path / "store", Recorder(), strategy="S4")) == \
        Counter({"S4_reason": N * 2 * R, "S4_extract": N * 2 * R})  # the original prompt's texts, reused


def test_mllm_is_released_before_the_text_llm_loads(tmp_path):
    recorder = Recorder()
    run(tmp_path, recorder, strategy="S3", rounds=1)
    mllm, llm = recorder.made
    assert mllm.spec.name == "fake_mllm" and mllm.closed
    assert llm.spec.name == "fake_llm"


def test_media_requests_point_at_the_sample_files_and_share_videos_adjacently(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    pairs = toy_pairs(4).assign(media_name=["v1", "v1", "v2", "v2"])
    for stem in ("v1", "v2"):
        (media / f"{stem}.mp4").write_bytes(b"")
    recorder = Recorder()
    run(tmp_path / "store", recorder, strategy="S2", pairs=pairs, media_dir=media, input_type="audiovideo")
    requests = recorder.requests("fake_mllm")
    describe = [r for r in requests if r.key.startswith("describe")]
    assert len(describe) == 2 * R  # two videos, not four pairs
    assert all(r.media.input_type == "audiovideo" and r.media.video.parent == media for r in requests)
    judged = [r.media.video.stem for r in requests if r.key.startswith("S2")]
    assert judged == sorted(judged)  # grouped by video


def test_missing_media_stops_the_run_with_the_full_list(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "s00.wav").write_bytes(b"")
    recorder = Recorder()
    with pytest.raises(DataError) as error:
        run(tmp_path / "store", recorder, strategy="S1", media_dir=media, input_type="audio")
    message = str(error.value)
    assert "4 media file(s) missing" in message
    assert all(f"s0{i}.wav" in message for i in range(1, 5)) and "s00.wav" not in message
    assert recorder.made == []
    # restricting the run to present media works
    run(tmp_path / "store", recorder, strategy="S1", media_dir=media, input_type="audio", names=["s00"])
    assert len(read_predictions(tmp_path / "store")) == 2 * R


def test_backend_choice_is_recorded_and_an_api_judge_keeps_a_local_text_llm(tmp_path, monkeypatch):
    from helpers.judges import registry

    monkeypatch.setitem(registry.BACKEND_CLASSES, "openai", "fake_backend:FakeBackend")
    monkeypatch.setitem(registry.BACKEND_CLASSES, "transformers", "fake_backend:FakeBackend")
    monkeypatch.setattr(registry, "_gpu_present", lambda: False)
    api_judge = JudgeSpec(name="api", family="openai", backend="openai", checkpoint="m", api_key_env="KEY_NAME",
                          input_type="text", options={"describe_prompt": "describe_input"})
    summary = engine.run(api_judge, "S3", pairs=toy_pairs(2), rounds=1, output_dir=tmp_path, dataset="toy",
                         judge_llm=FAKE_LLM, engine="openai", progress=False)
    manifest = json.loads((Path(summary.loc[0, "folder"]) / "manifest.json").read_text())
    assert manifest["engines"] == {"judge": "openai", "llm": "transformers"}
    assert manifest["judge_spec"]["api_key_env"] == "KEY_NAME"


def manifest_of(summary: pd.DataFrame, strategy: str) -> dict:
    folder = Path(summary.set_index("strategy").loc[strategy, "folder"])
    return json.loads((folder / "manifest.json").read_text())


def test_the_manifest_records_each_backends_own_description_once_built(tmp_path):
    summary = run(tmp_path, Recorder(), strategy="all", rounds=1)
    fake = {"backend": "fake", "device": "none", "delay_s": 0.0, "class": "fake_backend:FakeBackend"}
    s1, s3 = manifest_of(summary, "S1"), manifest_of(summary, "S3")
    assert s1["backend_info"] == {"judge": fake | {"checkpoint": "none"}}
    assert s1["sessions"][-1]["backend_info"] == s1["backend_info"]
    # S3 reused S2's descriptions (made in S2's run): only the text LLM served it
    assert s3["backend_info"] == {"llm": fake | {"checkpoint": "none"}}
    assert manifest_of(summary, "S2")["backend_info"] == {"judge": fake | {"checkpoint": "none"}}
    # a later session with nothing to do keeps what the earlier one recorded
    again = run(tmp_path, Recorder(), strategy="S1", rounds=1)
    assert manifest_of(again, "S1")["backend_info"] == s1["backend_info"]
    assert "backend_info" not in manifest_of(again, "S1")["sessions"][-1]


def test_an_api_judges_manifest_names_its_key_variable_but_never_holds_the_key(tmp_path, monkeypatch):
    from test_openai_backend import ScriptedServer

    sentinel = "sk-SENTINEL-never-on-disk-7f3a"
    monkeypatch.setenv("EMOPREFER_TEST_API_KEY", sentinel)
    server = ScriptedServer()
    try:
        api_judge = JudgeSpec(name="api", family="openai", backend="openai", checkpoint="gpt-test",
                              api_base=server.url, api_key_env="EMOPREFER_TEST_API_KEY", input_type="text",
                              batch_size=2, options={"describe_prompt": "describe_input"})
        summary = engine.run(api_judge, "S1", pairs=toy_pairs(2), rounds=1, output_dir=tmp_path, dataset="toy",
                             engine="openai", progress=False)
    finally:
        server.close()
    assert {r["auth"] for r in server.received} == {f"Bearer {sentinel}"}  # the key was used ...
    text = (Path(summary.loc[0, "folder"]) / "manifest.json").read_text()
    assert sentinel not in text  # ... and never written
    for file in Path(summary.loc[0, "folder"]).iterdir():
        assert sentinel not in file.read_text()
    info = json.loads(text)["backend_info"]["judge"]
    assert info["key_variable"] == "EMOPREFER_TEST_API_KEY"
    assert info["endpoint"] == server.url + "/chat/completions" and info["checkpoint"] == "gpt-test"


def test_a_backend_that_reports_its_key_has_it_masked_before_any_manifest(monkeypatch):
    from helpers.judges.registry import backend_info

    class Careless(FakeBackend):
        info = property(lambda self: {"endpoint": "https://x/v1?key=sk-SENTINEL", "headers": ["Bearer sk-SENTINEL"]})

    monkeypatch.setenv("EMOPREFER_TEST_API_KEY", "sk-SENTINEL")
    spec = dataclasses.replace(FAKE_MLLM, api_key_env="EMOPREFER_TEST_API_KEY")
    assert "sk-SENTINEL" not in json.dumps(backend_info(Careless(spec)))
    assert backend_info(Careless(spec))["endpoint"] == "https://x/v1?key=[redacted:EMOPREFER_TEST_API_KEY]"


def test_a_given_run_id_is_suffixed_per_strategy(tmp_path):
    summary = run(tmp_path, Recorder(), strategy="all", run_id="shard0", rounds=1)
    assert summary["run_id"].tolist() == ["shard0__S1", "shard0__S2", "shard0__S3", "shard0__S4"]
    single = run(tmp_path, Recorder(), strategy="S1", run_id="shard1", rounds=1)
    assert single["run_id"].tolist() == ["shard1"]


def test_s4_step2_post_processes_the_reasoning_as_the_official_code():
    """Issue 12 case 5: utils/qwen25.py's func_postprocess_qwen runs on every text-LLM answer, so
    the reasoning reaches the extraction prompt without its leading 'Output:' and with its
    newlines removed (not turned into spaces)."""
    from helpers.run.strategies import extract_prompt

    reason = "Output: a2 is better.\nReasoning: 1. a2 names the sadness.\n2. a1 misses it."
    expected = prompts.prompt("S4_extract").format(
        reason="a2 is better.Reasoning: 1. a2 names the sadness.2. a1 misses it.")
    assert extract_prompt(reason) == expected
    assert extract_prompt("输出：a1\n理由") == prompts.prompt("S4_extract").format(reason="a1理由")


def test_s4_extraction_requests_carry_the_post_processed_reasoning(tmp_path):
    from helpers.run.strategies import extract_prompt

    recorder = Recorder()
    run(tmp_path, recorder, strategy="S4", rounds=1, order="normal")
    steps = {s["key"]: s["text"] for s in load_steps(tmp_path) if s["step"] == "S4_reason"}
    extracts = [r for r in recorder.requests("fake_llm") if r.key.startswith("S4|")]
    assert {r.prompt for r in extracts} == {extract_prompt(t) for t in steps.values()}
    assert all("Reasoning" in r.prompt and ":\n" not in r.prompt for r in extracts)


SAMPLING_MLLM = dataclasses.replace(FAKE_MLLM, name="fake_sampler",
                                    generation={"max_new_tokens": 64, "do_sample": True, "temperature": 0.7})


def test_a_sampling_judge_describes_each_order_afresh_by_default_as_the_paper(tmp_path):
    """Issue 12 case 6: sharing one description across orders is only the paper's protocol under
    deterministic decoding; under sampling it would inflate S2-S4 swap consistency."""
    recorder = Recorder()
    summary = engine.run(SAMPLING_MLLM, "all", pairs=toy_pairs(), rounds=R, output_dir=tmp_path, progress=False,
                         judge_llm=FAKE_LLM, engine=recorder, dataset="toy")
    calls = total_calls(summary)
    assert calls == expected_calls(N, R, 2, ["S1", "S2", "S3", "S4"], shared_descriptions=False)
    assert calls["describe"] == N * R * 2
    described = [r for r in recorder.requests("fake_sampler") if r.key.startswith("describe|")]
    by_order = {}
    for r in described:
        by_order.setdefault(r.key.split("|")[4], set()).add(r.seed)
    assert by_order == {"normal": {0, 1}, "reverse": {1_000_003, 1_000_004}}, "the reversed order is a fresh sample"
    table = read_predictions(tmp_path)
    s2 = table[table["strategy"] == "S2"]
    assert s2.groupby(["name", "round"])["steps"].apply(lambda s: len({x["describe"] for x in s})).eq(2).all()
    manifest = json.loads((Path(summary.loc[1, "folder"]) / "manifest.json").read_text())
    assert manifest["parameters"]["share_descriptions"] == "auto"
    assert manifest["parameters"]["descriptions_shared"] is False


def test_share_descriptions_can_be_forced_either_way(tmp_path):
    shared = total_calls(engine.run(SAMPLING_MLLM, "S2", pairs=toy_pairs(), rounds=R, output_dir=tmp_path / "a",
                                    progress=False, engine=Recorder(), dataset="toy", share_descriptions=True))
    assert shared == expected_calls(N, R, 2, ["S2"], shared_descriptions=True)
    fresh = total_calls(run(tmp_path / "b", Recorder(), strategy="S2", share_descriptions=False))
    assert fresh == expected_calls(N, R, 2, ["S2"], shared_descriptions=False) == Counter(
        {"describe": N * R * 2, "S2": N * R * 2})
    with pytest.raises(ValueError, match="share_descriptions must be"):
        run(tmp_path / "c", Recorder(), strategy="S2", share_descriptions="sometimes")
