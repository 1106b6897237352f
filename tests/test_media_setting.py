"""Does the judge watch the video? ``media: real | none | mismatched`` (issue 29, item 4)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tiny_models import VIDEO_PIXELS, write_mp4

from helpers.judges import hf
from helpers.judges.base import JudgeSpec
from helpers.run import engine, results
from helpers.run.engine import RunConfig
from helpers.run.strategies import derangement
from helpers.stats.media import media_effect, media_sentence
from helpers.stats.metrics import two_class

pytestmark = pytest.mark.usefixtures("offline")


def test_a_derangement_moves_every_clip_and_is_fixed_by_the_seed():
    names = [f"c{i}" for i in range(7)]
    mapping = derangement(names, seed=3)
    assert sorted(mapping.values()) == names and all(k != v for k, v in mapping.items())
    assert derangement(names, seed=3) == mapping and derangement(names, seed=4) != mapping
    with pytest.raises(ValueError, match="at least two"):
        derangement(["only"], seed=0)


def test_an_unknown_media_setting_is_refused():
    with pytest.raises(ValueError, match="media must be one of"):
        RunConfig("length", media="muted")


@pytest.mark.slow
def test_media_none_and_mismatched_run_end_to_end_with_their_own_run_ids_and_are_kept_out_of_the_metrics(
        omni, tmp_path, monkeypatch):
    media = tmp_path / "media"
    media.mkdir()
    for i, name in enumerate(("c0", "c1", "c2")):
        write_mp4(media / f"{name}.mp4", tone_hz=300 + 100 * i)
    judge = JudgeSpec(name="tiny_omni", family="qwen25omni", backend="local", checkpoint=str(omni),
                      input_type="audiovideo", batch_size=4, generation={"max_new_tokens": 2},
                      options={"device": "cpu", "video_min_pixels": VIDEO_PIXELS["shortest_edge"],
                               "video_max_pixels": VIDEO_PIXELS["longest_edge"]})
    pairs = pd.DataFrame({"name": ["c0", "c1", "c2"], "a1": ["happy", "sad", "calm"], "a2": ["sad", "calm", "angry"],
                          "preference": ["a1", "a2", "a1"]})
    sent: list[list] = []
    real_generate = hf.TransformersBackend.generate

    def spy(self, requests):
        sent.append([r.media.video.name if r.media is not None else None for r in requests])
        return real_generate(self, requests)

    monkeypatch.setattr(hf.TransformersBackend, "generate", spy)
    out = tmp_path / "store"
    ids = {}
    for setting in ("real", "none", "mismatched"):
        sent.clear()
        summary = engine.run(judge, "S1", pairs=pairs, order="normal", rounds=1, media_dir=media, output_dir=out,
                             dataset="toy", engine="transformers", progress=False, media=setting)
        assert summary.loc[0, "status"] == "complete"
        ids[setting] = summary.loc[0, "run_id"]
        shown = [name for batch in sent for name in batch]
        if setting == "real":
            assert sorted(shown) == ["c0.mp4", "c1.mp4", "c2.mp4"]
        elif setting == "none":
            assert shown == [None, None, None], "the text prompt alone"
        else:
            mapping = derangement(["c0", "c1", "c2"], seed=0)
            assert sorted(shown) == sorted(f"{mapping[n]}.mp4" for n in ("c0", "c1", "c2"))
        record = json.loads((out / ids[setting] / "manifest.json").read_text())
        assert record["identity"]["parameters"].get("media") == (None if setting == "real" else setting)
    assert len(set(ids.values())) == 3 and ids["none"].endswith("media=none")
    assert ids["mismatched"].endswith("media=mismatched")
    assert len(results.load_predictions(out)) == 3, "only the judge's own run is its result"
    everything = results.load_predictions(out, media=None)
    assert sorted(everything["media"].value_counts().to_dict().items()) == [("mismatched", 3), ("none", 3),
                                                                            ("real", 3)]
    table = media_effect(everything, n_boot=50)
    assert list(table["media"]) == ["mismatched", "none"] and (table["pairs"] == 3).all()


def test_media_effect_matches_a_hand_count_and_is_a_sentence_without_such_runs():
    base = dict(judge="j", strategy="S1", input_type="video", order="normal", round=0)
    gt = ["a1", "a2", "a1", "a2"]
    real = ["a1", "a2", "a1", "a1"]
    none = ["a1", "a1", "a1", "a1"]
    rows = pd.DataFrame([{**base, "name": f"p{i}", "gt": g, "pred": p, "media": m}
                         for m, preds in (("real", real), ("none", none))
                         for i, (g, p) in enumerate(zip(gt, preds, strict=True))])
    table = media_effect(rows, n_boot=200)
    row = table.iloc[0]
    assert row["flipped_pct"] == 25.0  # one of four verdicts changed
    expected = 100 * (two_class(gt, none)["waf"] - two_class(gt, real)["waf"])
    assert row["waf_change"] == pytest.approx(expected)
    assert row["waf_change_lo"] <= row["waf_change"] <= row["waf_change_hi"]
    assert row["flipped_lo"] <= 25.0 <= row["flipped_hi"]
    empty = media_effect(rows[rows["media"] == "real"])
    assert empty.empty and "No judge has been run with more than one media setting" in media_sentence(empty)
