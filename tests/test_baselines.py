"""The text-only baselines: what they predict, and that none of them ever sees the label it is scored on."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from helpers.data import DataError, swap_pairs
from helpers.judges.base import JudgeSpec
from helpers.judges.embeddings import TextEmbedder
from helpers.judges.learned import MiniLMRewardJudge, MiniLMRewardNoLenJudge, SourceJudge, pair_folds
from helpers.judges.registry import load_spec, make_pair_judge


def spec(cls: type, **options) -> JudgeSpec:
    return JudgeSpec(name=cls.__name__.lower(), family="cpu", backend="cpu", strategies=("-",),
                     options={"judge_class": f"helpers.judges.learned:{cls.__name__}", **options})


def source_pairs(n: int = 60, a_wins: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """Pairs between systems A and B (A shown first in half of them); A wins a share ``a_wins``."""
    rng = np.random.default_rng(seed)
    a_first = np.arange(n) % 2 == 0
    a_won = rng.permutation(np.arange(n) < round(a_wins * n))
    preference = np.where(a_won == a_first, "a1", "a2")
    return pd.DataFrame({
        "name": [f"s{i:03d}" for i in range(n)],
        "a1": [f"text one {i}" for i in range(n)], "a2": [f"text two {i}" for i in range(n)],
        "model1": np.where(a_first, "A", "B"), "model2": np.where(a_first, "B", "A"),
        "preference": preference,
    })


# --------------------------------------------------------------------------- length (registered CPU judge)


def test_length_judge_prefers_the_longer_text_and_calls_ties_same():
    judge = make_pair_judge(load_spec("length"))
    pairs = pd.DataFrame({"name": ["p1", "p2", "p3"], "a1": ["long text", "ab", "abc"], "a2": ["short", "abcd", "xyz"]})
    assert judge.predict(pairs).tolist() == ["a1", "a2", "same"]


# --------------------------------------------------------------------------- folds


def test_folds_depend_on_the_names_and_seed_not_on_row_order():
    pairs = pd.DataFrame({"name": [f"n{i}" for i in range(23)]})
    folds = pair_folds(pairs, 5, seed=3)
    shuffled = pairs.sample(frac=1, random_state=1)
    assert pair_folds(shuffled, 5, seed=3).to_dict() == folds.loc[shuffled.index].to_dict()
    assert sorted(folds.value_counts().tolist()) == [4, 4, 5, 5, 5]
    assert not pair_folds(pairs, 5, seed=4).equals(folds)


def test_folds_are_grouped_by_video_so_no_video_is_on_both_sides():
    """Several pairs of one clip (a pair file's repeated name) stay in one fold: sklearn's GroupKFold."""
    videos = [f"v{i // 3}" for i in range(30)] + [f"w{i}" for i in range(10)]  # 10 videos x 3 pairs, 10 x 1
    pairs = pd.DataFrame({"name": [f"p{i}" for i in range(40)], "media_name": videos})
    for seed in range(5):
        folds = pair_folds(pairs, 5, seed=seed)
        for fold in range(5):
            test, train = set(pairs.loc[folds == fold, "media_name"]), set(pairs.loc[folds != fold, "media_name"])
            assert test and not test & train
    assert pairs.groupby("media_name").apply(lambda g: folds[g.index].nunique(), include_groups=False).eq(1).all()


# --------------------------------------------------------------------------- source


def test_source_judge_picks_the_system_humans_prefer():
    pairs = source_pairs(a_wins=0.8)
    pred = SourceJudge(spec(SourceJudge)).predict(pairs)
    assert (pred == np.where(pairs["model1"] == "A", "a1", "a2")).all()


def test_source_judge_never_uses_the_pairs_own_label():
    """Flipping a held-out pair's label changes other pairs' verdicts but never its own."""
    pairs = source_pairs(a_wins=0.5)  # balanced: one label tips the overall win rates
    judge = SourceJudge(spec(SourceJudge))
    before = judge.predict(pairs, seed=7)
    changed_elsewhere = False
    for i in range(0, len(pairs), 6):
        flipped = pairs.copy()
        flipped.loc[i, "preference"] = {"a1": "a2", "a2": "a1"}[pairs.loc[i, "preference"]]
        after = judge.predict(flipped, seed=7)
        assert after[i] == before[i], f"pair {i} is scored with its own label"
        changed_elsewhere |= bool((after != before).any())
        # a judge fitted on every pair (no cross-fitting) would be caught by this test
        leaky_before = judge.predict_fitted(judge.fit(pairs), pairs.loc[[i]])
        leaky_after = judge.predict_fitted(judge.fit(flipped), flipped.loc[[i]])
        assert leaky_before[i] != leaky_after[i]
    assert changed_elsewhere, "the label should matter to the other folds"


def test_source_judge_is_mirrored_in_the_reversed_order():
    pairs = source_pairs(a_wins=0.6, seed=2)
    judge = SourceJudge(spec(SourceJudge))
    normal, reverse = judge.predict(pairs, seed=1), judge.predict(swap_pairs(pairs), seed=1)
    assert (reverse == normal.map({"a1": "a2", "a2": "a1", "same": "same"})).all()


def test_source_judge_says_same_for_a_system_it_has_not_seen():
    pairs = source_pairs(a_wins=0.8)
    pairs.loc[5, "model1"] = "C"  # C appears in no other pair, so never in a training fold
    assert SourceJudge(spec(SourceJudge)).predict(pairs)[5] == "same"


def test_source_judge_needs_the_writing_models():
    pairs = source_pairs().drop(columns=["model1", "model2"])
    with pytest.raises(DataError, match="model1, model2.*with_modelnames"):
        SourceJudge(spec(SourceJudge)).predict(pairs)


def test_cross_fitted_judges_refuse_unknown_labels():
    pairs = source_pairs()
    pairs.loc[3, "preference"] = "both"
    with pytest.raises(DataError, match="s003.*'both'"):
        SourceJudge(spec(SourceJudge)).predict(pairs)


# --------------------------------------------------------------------------- reward model


def fake_encoder(calls: list[int]):
    """A deterministic stand-in for MiniLM: dim 0 = log length, dim 1 = 'warm' word count,
    the rest hash noise. Records how many texts it was asked to encode."""

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            noise = np.random.default_rng(seed).normal(scale=0.1, size=6)
            rows.append(np.r_[np.log(len(text)), text.count("warm"), noise])
        return np.array(rows)

    return encode


def reward_pairs(n: int = 80, driver: str = "warm", seed: int = 0) -> pd.DataFrame:
    """Pairs where humans prefer the text with more 'warm' (driver='warm') or the longer one."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        w1, w2 = rng.integers(0, 4, size=2)
        while w1 == w2:
            w2 = rng.integers(0, 4)
        pad1, pad2 = rng.integers(5, 60, size=2)
        while pad1 == pad2:
            pad2 = rng.integers(5, 60)
        a1 = f"case {i} " + "warm " * w1 + "x" * pad1
        a2 = f"case {i} " + "warm " * w2 + "y" * pad2
        first = w1 > w2 if driver == "warm" else len(a1) > len(a2)
        rows.append({"name": f"r{i:03d}", "a1": a1, "a2": a2, "preference": "a1" if first else "a2"})
    return pd.DataFrame(rows)


def reward_judge(cls: type, tmp_path, calls: list[int]) -> MiniLMRewardJudge:
    judge = cls(spec(cls, cache_dir=str(tmp_path), Cs=4, inner_folds=3))  # a small grid keeps tests fast
    judge.embedder = TextEmbedder(cache_dir=tmp_path, encoder=fake_encoder(calls))
    return judge


def test_reward_model_learns_the_signal_out_of_fold(tmp_path):
    pairs = reward_pairs(driver="warm")
    pred = reward_judge(MiniLMRewardJudge, tmp_path, []).predict(pairs, seed=0)
    assert (pred == pairs["preference"]).mean() >= 0.9


def test_reward_model_is_order_invariant_by_construction(tmp_path):
    pairs = reward_pairs(driver="warm", seed=5)
    calls: list[int] = []
    judge = reward_judge(MiniLMRewardJudge, tmp_path, calls)
    normal = judge.predict(pairs, seed=2)
    reverse = judge.predict(swap_pairs(pairs), seed=2)
    assert (reverse == normal.map({"a1": "a2", "a2": "a1", "same": "same"})).all()
    assert sum(calls) == 2 * len(pairs)  # the reversed order was served from the cache


def test_reward_model_says_same_only_for_indistinguishable_texts(tmp_path):
    pairs = reward_pairs(driver="warm", n=40)
    pairs.loc[0, "a2"] = pairs.loc[0, "a1"]
    pred = reward_judge(MiniLMRewardJudge, tmp_path, []).predict(pairs, seed=0)
    assert pred[0] == "same"
    assert (pred[1:] != "same").all()


def test_reward_model_is_deterministic_given_the_seed(tmp_path):
    pairs = reward_pairs(driver="warm", seed=9)
    judge = reward_judge(MiniLMRewardJudge, tmp_path, [])
    assert judge.predict(pairs, seed=4).equals(judge.predict(pairs, seed=4))


def test_length_free_reward_model_cannot_use_length(tmp_path):
    """Humans follow length only: the full model learns it, the length-free one is at chance."""
    pairs = reward_pairs(n=200, driver="length", seed=3)
    full = reward_judge(MiniLMRewardJudge, tmp_path, []).predict(pairs, seed=0)
    nolen = reward_judge(MiniLMRewardNoLenJudge, tmp_path, []).predict(pairs, seed=0)
    assert (full == pairs["preference"]).mean() >= 0.9
    assert 0.35 <= (nolen == pairs["preference"]).mean() <= 0.65


def test_length_free_reward_model_keeps_content_signal(tmp_path):
    pairs = reward_pairs(n=200, driver="warm", seed=4)
    nolen = reward_judge(MiniLMRewardNoLenJudge, tmp_path, []).predict(pairs, seed=0)
    assert (nolen == pairs["preference"]).mean() >= 0.85


def test_registered_baselines_load_from_params():
    for name, cls in [("source", SourceJudge), ("minilm_rm", MiniLMRewardJudge), ("minilm_rm_nolen", MiniLMRewardNoLenJudge)]:
        judge = make_pair_judge(load_spec(name))
        assert type(judge) is cls and judge.folds == 5


# --------------------------------------------------------------------------- embedding cache


def test_embeddings_are_cached_on_disk_and_reused(tmp_path):
    calls: list[int] = []
    texts = ["a happy face", "a sad voice", "a happy face"]
    first = TextEmbedder(cache_dir=tmp_path, model_id="fake", encoder=fake_encoder(calls))
    vectors = first.embed(texts)
    assert (first.misses, first.hits, calls) == (2, 0, [2])  # the repeated text is encoded once
    second = TextEmbedder(cache_dir=tmp_path, model_id="fake", encoder=fake_encoder(calls))
    again = second.embed(list(reversed(texts)))
    assert (second.misses, second.hits, calls) == (0, 2, [2])
    np.testing.assert_array_equal(again, vectors[::-1])
    assert sorted(p.suffix for p in (tmp_path / "fake").rglob("*") if p.is_file()) == [".npy", ".npy"]


def test_embedding_cache_separates_models(tmp_path):
    calls: list[int] = []
    TextEmbedder(cache_dir=tmp_path, model_id="m1", encoder=fake_encoder(calls)).embed(["text"])
    other = TextEmbedder(cache_dir=tmp_path, model_id="m2", encoder=fake_encoder(calls))
    other.embed(["text"])
    assert other.misses == 1


@pytest.mark.slow
def test_minilm_embeds_offline_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["The man smiles warmly.", "She sounds angry and tense."]
    first = TextEmbedder(cache_dir=tmp_path)
    vectors = first.embed(texts)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    second = TextEmbedder(cache_dir=tmp_path)
    np.testing.assert_array_equal(second.embed(texts), vectors)
    assert (second.hits, second.misses) == (2, 0)
