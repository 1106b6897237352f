"""Reward models a MER-Prefer participant would trust: grouped cross-validation scores checked
against sklearn, and learned judges that train on labelled pair files and predict any pair file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score
from test_baselines import fake_encoder, reward_pairs, source_pairs, spec

from helpers.data import DataError, read_pair_file
from helpers.judges.embeddings import TextEmbedder
from helpers.judges.learned import CV_COLUMNS, MiniLMRewardJudge, SourceJudge, cross_validation
from helpers.judges.registry import load_spec


def _two_class(gt: pd.Series, pred: pd.Series) -> tuple[float, float]:
    keep = gt != "same"
    g, p = gt[keep], pred[keep].replace("same", "a1")
    return 100 * f1_score(g, p, average="weighted"), 100 * accuracy_score(g, p)


def test_cv_scores_are_the_mean_over_fold_seeds_of_sklearn_scores_with_intervals_around_them():
    pairs = source_pairs(n=60, a_wins=0.7)
    pairs["a1"] = [f"t{'x' * (i % 7)}" for i in range(60)]
    source = spec(SourceJudge)
    cv = cross_validation([load_spec("length"), source], pairs, folds=5, fold_seeds=3, n_boot=200)
    assert list(cv.columns) == CV_COLUMNS and list(cv["judge"]) == ["length", "sourcejudge"]
    longer = np.where(pairs["a1"].str.len() > pairs["a2"].str.len(), "a1",
                      np.where(pairs["a1"].str.len() < pairs["a2"].str.len(), "a2", "same"))
    waf, acc = _two_class(pairs["preference"], pd.Series(longer))
    assert cv.loc[0, "two_class_waf"] == pytest.approx(waf) and cv.loc[0, "two_class_acc"] == pytest.approx(acc)
    judge = SourceJudge(source)
    by_seed = [_two_class(pairs["preference"], judge.predict(pairs, seed=s)) for s in range(3)]
    assert cv.loc[1, "two_class_waf"] == pytest.approx(np.mean([w for w, _ in by_seed]))
    assert cv.loc[1, "two_class_acc"] == pytest.approx(np.mean([a for _, a in by_seed]))
    for metric in ("two_class_waf", "two_class_acc", "len_balanced"):
        value = cv[metric if metric != "len_balanced" else "len_balanced_acc"]
        assert (cv[f"{metric}_lo"] <= value + 1e-9).all() and (value <= cv[f"{metric}_hi"] + 1e-9).all()
    assert cv.loc[0, "folds"] == 0 and cv.loc[1, "folds"] == 5 and cv.loc[1, "pairs"] == 60


def test_cross_validation_needs_labels():
    with pytest.raises(DataError, match="labelled pairs"):
        cross_validation(["length"], pd.DataFrame({"name": ["a"], "a1": ["x"], "a2": ["y"]}))


def _trained(tmp_path, sources):
    judge = MiniLMRewardJudge(spec(MiniLMRewardJudge, cache_dir=str(tmp_path), Cs=4, inner_folds=3,
                                   train_on=[str(s) for s in sources]))
    judge.embedder = TextEmbedder(cache_dir=tmp_path, encoder=fake_encoder([]))
    return judge


def test_a_reward_model_trains_on_labelled_pair_files_and_predicts_an_unlabelled_one(tmp_path):
    train = reward_pairs(n=80, seed=0)
    train[:40].to_csv(tmp_path / "train_a.csv", index=False)
    train[40:].to_parquet(tmp_path / "train_b.parquet")
    candidates = reward_pairs(n=30, seed=5).assign(name=lambda t: "c" + t["name"])
    truth = candidates.pop("preference")
    candidates.to_csv(tmp_path / "candidates.csv", index=False)
    judge = _trained(tmp_path, [tmp_path / "train_a.csv", tmp_path / "train_b.parquet"])
    pred = judge.predict(read_pair_file(tmp_path / "candidates.csv").pairs)
    assert (pred.to_numpy() == truth.to_numpy()).mean() >= 0.9  # 'warm' drives the labels; the model learned it
    hashes = MiniLMRewardJudge.artefacts(judge.spec)["train_on"]
    assert hashes == {str(tmp_path / "train_a.csv"): {"train_a.csv": read_pair_file(tmp_path / "train_a.csv").sha256},
                      str(tmp_path / "train_b.parquet"): {"train_b.parquet":
                                                          read_pair_file(tmp_path / "train_b.parquet").sha256}}


def test_a_trained_model_refuses_to_predict_its_own_training_pairs_and_unlabelled_training_files(tmp_path):
    train = reward_pairs(n=40, seed=0)
    train.to_csv(tmp_path / "train.csv", index=False)
    swapped = train.rename(columns={"a1": "a2", "a2": "a1"}).head(3).drop(columns="preference")
    with pytest.raises(DataError, match=r"trained on 3 of the pairs it is asked to predict"):
        _trained(tmp_path, [tmp_path / "train.csv"]).predict(swapped)
    train.drop(columns="preference").to_csv(tmp_path / "unlabelled.csv", index=False)
    with pytest.raises(DataError, match="cannot learn from unlabelled pairs"):
        _trained(tmp_path, [tmp_path / "unlabelled.csv"]).predict(swapped)


@pytest.mark.slow
def test_notebook_06c_writes_the_cv_table_it_computes(tmp_path):
    papermill = pytest.importorskip("papermill")
    from test_confound_notebook import write_dataset

    from helpers import paths

    pairs = write_dataset(tmp_path / "data")
    papermill.execute_notebook(
        str(paths.project_root() / "notebooks" / "06c_reward_models.ipynb"), str(tmp_path / "executed.ipynb"),
        parameters={"reports_dir": str(tmp_path / "reports"), "data_dir": str(tmp_path / "data"),
                    "judges": ["length", "source"], "fold_seeds": 2, "n_boot": 50},
        cwd=str(paths.project_root() / "notebooks"), progress_bar=False, kernel_name="python3",
    )
    table = pd.read_csv(tmp_path / "reports" / "tables" / "reward_cv.csv")
    direct = cross_validation(["length", "source"], pairs, fold_seeds=2, n_boot=50)
    pd.testing.assert_frame_equal(table, direct, check_dtype=False)
