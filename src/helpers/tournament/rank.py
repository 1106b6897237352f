"""From judged predictions to leaderboards: comparisons, plain and style-controlled Bradley–Terry,
and agreement with human labels.

Ranking decisions, each for a reason:
- an order-inconsistent comparison (the verdict flips when the two texts swap places) counts as a
  tie: the judge did not prefer either system, it preferred a position;
- rounds of one comparison are pooled by their mean score (win 1, tie 0.5, loss 0), so a
  deterministic judge judged twice does not count as two comparisons;
- ranks are CI-aware and free of the reference system: rank = 1 + the number of systems that beat
  this one in at least 97.5 % of the bootstrap replicates (the interval of the rating *difference*
  excludes 0; :func:`helpers.stats.bt.reference_free_summary`), so systems the data cannot separate
  share a rank, and ``--reference`` only moves every rating by one constant;
- style control (:func:`helpers.stats.bt.fit_bt` with ``covariates=("length_diff",)``) adds
  the normalised length difference ``(len_a - len_b) / (len_a + len_b)`` as a regressor beside the
  system strengths, so the leaderboard can say how much of a system's rank is only length.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from helpers.data import DataError, scan_table, swap_label
from helpers.stats.bt import SCORE, WINNERS, bradley_terry, fit_bt
from helpers.stats.metrics import CELL
from helpers.tournament.design import comparison_id
from helpers.tournament.table import _problem, _where


def length_diff(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Normalised character-length difference ``(len a - len b) / (len a + len b)`` in [-1, 1]."""
    la = np.array([len(t) for t in a], float)
    lb = np.array([len(t) for t in b], float)
    return (la - lb) / np.maximum(la + lb, 1.0)


def unjudged(predictions: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per judge cell that has any verdict, the design comparisons it has not judged in both
    orders (``judge, strategy, input_type, name``): what a killed shard or batch leaves behind."""
    keys = [*CELL, "name"]
    preds = predictions[predictions["name"].isin(pairs["name"])]
    if preds.empty:
        return pd.DataFrame(columns=keys)
    both = preds.groupby(keys)["order"].nunique()
    complete = set(both.index[both >= 2])
    rows = [(*cell, name) for cell in preds[CELL].drop_duplicates().itertuples(index=False)
            for name in pairs["name"] if (*cell, name) not in complete]
    return pd.DataFrame(rows, columns=keys)


def log_length_ratio(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """``log(len a / len b)`` (lengths of at least 1 character): the style covariate for a judge
    whose preference grows with the *ratio* of the lengths rather than their normalised difference."""
    la = np.maximum(np.array([len(t) for t in a], float), 1.0)
    lb = np.maximum(np.array([len(t) for t in b], float), 1.0)
    return np.log(la / lb)


STYLES = {"linear": "length_diff", "log-length": "log_length_ratio"}
"""``--style``: the covariate of style control, by name. ``linear`` is Arena's normalised length
difference ``(len a - len b) / (len a + len b)``; ``log-length`` the log ratio of the lengths."""
LENGTH_RULE_WARN = 0.95  # agreement with "the longer text wins" above which a leaderboard is flagged as length


def comparisons_from_predictions(predictions: pd.DataFrame, pairs: pd.DataFrame, partial: bool = False) -> pd.DataFrame:
    """One comparison per judge cell × design comparison, from the store's predictions.

    Per round, the normal verdict and the reverse verdict mapped back to the normal frame must
    agree, else the comparison is a tie (``consistent`` False); rounds are then pooled by their
    mean score (a 1, tie 0.5, b 0). ``pairs`` is :func:`to_pairs`'s table (for systems and lengths).
    A comparison judged in one order only is an error, unless ``partial`` (the caller has said
    the ranking is partial: :func:`unjudged`), when it is left out.
    """
    keys = [*CELL, "round", "name"]
    preds = predictions[predictions["name"].isin(pairs["name"])]
    if preds.empty:
        raise DataError("no predictions for this tournament's comparisons (judge it first)")
    wide = preds.drop_duplicates([*keys, "order"], keep="last").pivot(index=keys, columns="order", values="pred")
    if partial:
        wide = wide.dropna(subset=[o for o in ("normal", "reverse") if o in wide.columns])
    for order in ("normal", "reverse"):
        if order not in wide.columns or wide[order].isna().any():
            lacking = wide.index[wide[order].isna()] if order in wide.columns else wide.index
            raise DataError(
                f"{len(lacking)} comparison(s) lack their {order!r} verdict (e.g. {lacking[0]}); a tournament "
                "judges both orders so that an order-inconsistent verdict can count as a tie"
            )
    normal, mapped = wide["normal"], wide["reverse"].map(swap_label)
    consistent = normal == mapped
    winner = np.where(consistent, normal.map({"a1": "a", "a2": "b", "same": "tie"}), "tie")
    per_round = pd.DataFrame({"score": pd.Series(winner, index=wide.index).map(SCORE), "consistent": consistent})
    pooled = per_round.groupby([*CELL, "name"]).agg(
        score=("score", "mean"), consistency=("consistent", "mean"), n_rounds=("score", "size")
    ).reset_index()
    pooled["winner"] = np.where(pooled["score"] > 0.5, "a", np.where(pooled["score"] < 0.5, "b", "tie"))
    info = pairs.set_index("name")
    out = pooled.rename(columns={"name": "comparison"})
    out["name"] = out["comparison"].map(info["media_name"])
    out["system_a"] = out["comparison"].map(info["system_a"])
    out["system_b"] = out["comparison"].map(info["system_b"])
    out["length_diff"] = out["comparison"].map(pd.Series(length_diff(info["a1"], info["a2"]), index=info.index))
    out["log_length_ratio"] = out["comparison"].map(pd.Series(log_length_ratio(info["a1"], info["a2"]), index=info.index))
    return out[[*CELL, "comparison", "name", "system_a", "system_b", "winner", "consistency", "n_rounds", "length_diff",
                "log_length_ratio"]]


# --------------------------------------------------------------------------- leaderboards


def plain_bt(comparisons: pd.DataFrame, *, n_boot: int, seed: int, reference: str | None, prior: float) -> pd.DataFrame:
    """Plain Bradley–Terry (``helpers.stats.bt.bradley_terry``) with its reference-free CI-aware rank."""
    return bradley_terry(comparisons[["system_a", "system_b", "winner"]], n_boot=n_boot, seed=seed,
                         reference=reference, prior=prior)


def leaderboard(
    comparisons: pd.DataFrame,
    entries: pd.DataFrame | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    reference: str | None = None,
    prior: float = 1.0,
    style: str = "linear",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plain and style-controlled BT for every judge cell, long format (``method`` column:
    ``plain`` / ``style_control``), and per cell what the style covariate explains
    (:func:`style_fit`). ``style``: the covariate (:data:`STYLES`), named in the ``covariate``
    column. ``entries`` adds each system's mean description length. ``prior`` (one virtual tie
    per pair of systems by default) keeps a judge that always prefers one system finite; it is
    negligible beside hundreds of comparisons per pair."""
    if style not in STYLES:
        raise DataError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    covariate = STYLES[style]
    boards, coefs = [], []
    for cell, group in comparisons.groupby(CELL, sort=True):
        plain = plain_bt(group, n_boot=n_boot, seed=seed, reference=reference, prior=prior)
        styled = fit_bt(group, (covariate,), n_boot=n_boot, seed=seed, reference=reference, prior=prior)
        for method, board in (("plain", plain), ("style_control", styled.ratings)):
            board = board.assign(method=method, swap_consistency=group["consistency"].mean())
            board[CELL] = list(cell)
            boards.append(board)
        coefs.append(styled.coefficients.assign(style=style, **style_fit(group, plain, styled, covariate),
                                                **dict(zip(CELL, cell, strict=True))))
    out = pd.concat(boards, ignore_index=True)
    if entries is not None:
        lengths = entries.assign(length=entries["description"].str.len()).groupby("system")["length"].mean()
        out["mean_length"] = out["system"].map(lengths)
    first = [*CELL, "method", "rank", "system"]
    return out[first + [c for c in out.columns if c not in first]], pd.concat(coefs, ignore_index=True)


def _deviance(comparisons: pd.DataFrame, strength: pd.Series, gamma: float = 0.0, covariate: str | None = None) -> float:
    """``-2 log L`` of the comparisons (a tie half a win each way) under log-strengths ``strength``."""
    eta = comparisons["system_a"].map(strength).to_numpy() - comparisons["system_b"].map(strength).to_numpy()
    if covariate:
        eta = eta + gamma * comparisons[covariate].to_numpy(float)
    y = comparisons["winner"].map(SCORE).to_numpy(float)
    log_p, log_q = -np.logaddexp(0, -eta), -np.logaddexp(0, eta)
    return float(-2 * (y * log_p + (1 - y) * log_q).sum())


def style_fit(comparisons: pd.DataFrame, plain: pd.DataFrame, styled, covariate: str) -> dict[str, float]:
    """What the style covariate explains for one judge cell: the deviance of the plain and the
    style-controlled fits on the comparisons and its reduction in percent (how much better the
    covariate predicts the verdicts), the share of the plain ratings' variance across systems
    that style control removes, and the judge's agreement with the rule "the longer text wins"
    on the comparisons it decided between texts of different length (a judge above
    :data:`LENGTH_RULE_WARN` is explained by length)."""
    plain_s = plain.set_index("system")["log_strength"]
    style_s = styled.ratings.set_index("system")["log_strength"]
    gamma = float(styled.coefficients["coef"].iloc[0])
    d_plain, d_style = _deviance(comparisons, plain_s), _deviance(comparisons, style_s, gamma, covariate)
    decided = comparisons[(comparisons["winner"] != "tie") & (comparisons["length_diff"] != 0)]
    longer = np.where(decided["length_diff"] > 0, "a", "b")
    return {"deviance_plain": d_plain, "deviance_style": d_style,
            "deviance_reduction_pct": 100 * (d_plain - d_style) / d_plain if d_plain > 0 else np.nan,
            "rating_variance_removed_pct": 100 * (1 - style_s.var() / plain_s.var()) if plain_s.var() > 0 else np.nan,
            "longer_rule_agreement": float((decided["winner"].to_numpy() == longer).mean()) if len(decided) else np.nan,
            "longer_rule_n": len(decided)}


def length_warnings(coefficients: pd.DataFrame) -> list[str]:
    """One line per judge cell whose decided verdicts follow "the longer text wins" at least
    :data:`LENGTH_RULE_WARN` of the time: its leaderboard ranks lengths, and style control cannot
    recover quality from a judge that never looked past them."""
    flagged = coefficients[coefficients["longer_rule_agreement"] >= LENGTH_RULE_WARN]
    return [f"note: judge {r.judge} ({r.strategy}) picks the longer text in {r.longer_rule_agreement:.0%} of the "
            f"{int(r.longer_rule_n)} comparisons it decided between texts of different length: its leaderboard is "
            "explained by length, not by quality beyond length" for r in flagged.itertuples()]


# --------------------------------------------------------------------------- human labels


def load_human(path: str | Path) -> pd.DataFrame:
    """Human verdicts on some comparisons: CSV/Parquet with ``name, system_a, system_b, winner``
    (winner in a/b/tie relative to the columns as written), turned to the design's canonical
    orientation (system_a < system_b) with its ``comparison`` id."""
    path = Path(path)
    frame, found = scan_table(path, ("name", "system_a", "system_b", "winner"))  # the one reader of a user's table
    problems = [str(p) for p in found]
    if not problems:
        for i, row in enumerate(frame.itertuples(index=False)):
            if row.winner not in WINNERS:
                problems.append(_problem(str(path), _where(frame, i), "winner", row.winner, "winner must be one of a, b, tie"))
            if row.system_a == row.system_b:
                problems.append(_problem(str(path), _where(frame, i), "system_b", row.system_b, "a system compared with itself"))
    if problems:
        raise DataError(f"{len(problems)} problem(s) in human labels {path}:\n  " + "\n  ".join(problems[:50]))
    if frame.empty:
        raise DataError(f"human labels {path}: no rows")
    flip = (frame["system_a"] > frame["system_b"]).to_numpy()
    out = pd.DataFrame({
        "name": frame["name"].to_numpy(),
        "system_a": np.where(flip, frame["system_b"], frame["system_a"]),
        "system_b": np.where(flip, frame["system_a"], frame["system_b"]),
        "winner": np.where(flip, frame["winner"].map({"a": "b", "b": "a", "tie": "tie"}), frame["winner"]),
    })
    out.insert(0, "comparison", [comparison_id(*r) for r in out[["name", "system_a", "system_b"]].itertuples(index=False)])
    repeated = out["comparison"].duplicated(keep=False)
    if repeated.any():  # each label would count as a comparison of its own, conflicting ones against each other
        lines = [f"{_where(frame, i)} ({frame['name'].iat[i]}: {frame['system_a'].iat[i]} vs {frame['system_b'].iat[i]}, "
                 f"winner {frame['winner'].iat[i]})" for i in np.flatnonzero(repeated.to_numpy())[:10]]
        raise DataError(f"human labels {path}: {int(repeated.sum())} rows label the same comparison more than once "
                        "(in either orientation); give one label per comparison (e.g. the annotators' majority):\n  "
                        + "\n  ".join(lines))
    return out


def human_report(board: pd.DataFrame, comparisons: pd.DataFrame, human: pd.DataFrame, *, n_boot: int, seed: int,
                 prior: float = 1.0) -> pd.DataFrame:
    """Per judge cell: agreement with the humans on the labelled comparisons, and the rank
    correlation between the humans' plain-BT leaderboard and the judge's."""
    agreement = human_agreement(comparisons, human)
    human_board = plain_bt(human, n_boot=0, seed=seed, reference=None, prior=prior)
    plain = board[board["method"] == "plain"]
    corr = [
        {**dict(zip(CELL, cell, strict=True)), **rank_correlation(human_board, group)}
        for cell, group in plain.groupby(CELL, sort=True)
    ]
    return agreement.merge(pd.DataFrame(corr), on=CELL, how="outer") if len(agreement) else pd.DataFrame(corr)


def human_agreement(comparisons: pd.DataFrame, human: pd.DataFrame) -> pd.DataFrame:
    """Per judge cell, on the comparisons humans labelled (``comparison, winner``): raw agreement
    over all of them, agreement where the human decided (no tie), and Cohen's kappa."""
    labelled = comparisons.merge(human[["comparison", "winner"]].rename(columns={"winner": "human"}), on="comparison")
    rows = []
    for cell, group in labelled.groupby(CELL, sort=True):
        decided = group[group["human"] != "tie"]
        rows.append({
            **dict(zip(CELL, cell, strict=True)), "n_labelled": len(group),
            "agreement": float((group["winner"] == group["human"]).mean()),
            "agreement_decided": float((decided["winner"] == decided["human"]).mean()) if len(decided) else np.nan,
            "kappa": float(cohen_kappa_score(group["human"], group["winner"], labels=list(WINNERS))),
        })
    return pd.DataFrame(rows)


def rank_correlation(left: pd.DataFrame, right: pd.DataFrame) -> dict[str, float]:
    """Kendall's tau and Spearman's rho between two leaderboards' ratings on their common systems
    (NaN with fewer than three common systems: two systems give ±1 by construction)."""
    common = left.set_index("system")["log_strength"].rename("l").to_frame().join(
        right.set_index("system")["log_strength"].rename("r"), how="inner")
    if len(common) < 3:
        return {"n_systems": len(common), "kendall_tau": np.nan, "spearman_rho": np.nan}
    return {"n_systems": len(common), "kendall_tau": float(stats.kendalltau(common["l"], common["r"]).statistic),
            "spearman_rho": float(stats.spearmanr(common["l"], common["r"]).statistic)}
