"""MER-style tournaments: rank many description systems with a judge instead of with humans.

A challenge or a lab has M description systems that each described the same N samples and wants a
leaderboard without paying for C(M,2)·N human comparisons. A tournament is just another dataset
of pairs for the study's engine. The package follows the data:

- :mod:`~helpers.tournament.table` validates the long table ``name, system, description``;
- :mod:`~helpers.tournament.design` draws a seeded pair design, stores it with the table's hash,
  budget and seed, refuses to reuse it for another table or draw, and turns it into the pairs
  table the engine judges;
- :mod:`~helpers.tournament.judge` judges the comparisons (both orders, so every judge's swap
  consistency is known) in shards through the same engine, registry and resumable store;
- :mod:`~helpers.tournament.rank` turns judged predictions into comparisons and plain and
  style-controlled Bradley–Terry leaderboards, and compares them with human labels;
- :mod:`~helpers.tournament.demo` is the v1 demonstration (four systems whose true order is known
  by construction), the logic of ``notebooks/07_tournament.ipynb``;
- ``python -m helpers.tournament validate|design|judge|rank`` is the command line (``__main__``).

The Bradley–Terry fitter (plain and style-controlled) lives in ``helpers.stats.bt``.
"""

from __future__ import annotations

from helpers.tournament.demo import cpu_judges, length_alignment, wide_leaderboard
from helpers.tournament.design import (
    Design,
    check_design,
    comparison_id,
    design_differences,
    design_pairs,
    has_design,
    read_design,
    to_pairs,
    write_design,
)
from helpers.tournament.judge import (
    end_with_parent,
    judge_shard,
    judge_tournament,
    pairs_digest,
    shard_names,
    tournament_predictions,
    workers_end_on_interrupt,
)
from helpers.tournament.rank import (
    CELL,
    comparisons_from_predictions,
    human_agreement,
    human_report,
    leaderboard,
    length_diff,
    load_human,
    plain_bt,
    rank_correlation,
)
from helpers.tournament.table import (
    COLUMNS,
    SAFE_ID,
    SEPARATOR,
    check_entries,
    coverage,
    entries_sha256,
    load_entries,
    missing_report,
    read_entries,
    system_id,
)


def main(argv: list[str] | None = None) -> int:
    """The command line (:func:`helpers.tournament.__main__.main`), imported on call so that
    ``python -m helpers.tournament`` does not import its ``__main__`` twice."""
    from helpers.tournament.__main__ import main as cli

    return cli(argv)


__all__ = [
    "CELL", "COLUMNS", "SEPARATOR", "Design", "check_design", "check_entries", "comparison_id",
    "comparisons_from_predictions", "coverage", "cpu_judges", "design_differences", "design_pairs",
    "end_with_parent", "entries_sha256", "has_design", "human_agreement", "human_report", "judge_shard",
    "judge_tournament", "leaderboard", "length_alignment", "length_diff", "load_entries", "load_human", "main",
    "missing_report", "pairs_digest", "plain_bt", "rank_correlation", "read_design", "read_entries",
    "shard_names", "to_pairs", "tournament_predictions", "wide_leaderboard", "workers_end_on_interrupt",
    "write_design", "SAFE_ID", "system_id",
]
