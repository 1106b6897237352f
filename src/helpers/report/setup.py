"""The one preamble of every analysis notebook, and the one reader of the paper's reported numbers.

Each analysis notebook (00, 02–09) opens with ``ctx = setup(predictions_dir, reports_dir, dataset,
data_dir)``: the report's folders exist, the predictions of ``dataset`` are loaded (complete runs
only, scored against
the data files as they are now) and refused when there are none, and the paper's table is
parsed. Why one function: the notebooks used to repeat these ~30 lines, so a change to where
tables go or to the "run the judges first" rule had to be made six times.

``params/paper_results.yaml`` is read by its one reader, :func:`helpers.reported.paper_results`, into
typed rows; the statistics take that object as an argument.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helpers import paths
from helpers.reported import PaperResults, paper_results
from helpers.run.results import left_out_runs, load_predictions
from helpers.stats.metrics import CELL

EMPTY_HINT = "run the judges first (make report runs the CPU grid; python -m helpers.run params/grid_cpu.yaml)"


@dataclass(frozen=True, eq=False)
class Analysis:
    """What a notebook works with: where it writes, which data it analyses, what was judged."""

    dataset: str
    data_dir: Path | None
    predictions_dir: Path  # the predictions store root, resolved
    reports_dir: Path
    paper: PaperResults  # params/paper_results.yaml, typed (empty when absent)
    predictions: pd.DataFrame | None  # None when the notebook asked for no predictions
    left_out: pd.DataFrame | None = None  # runs not complete, so not in ``predictions`` (run_id, status, rows)

    @property
    def tables(self) -> Path:
        return self.reports_dir / "tables"

    @property
    def figures(self) -> Path:
        return self.reports_dir / "figures"

    @property
    def cells(self) -> pd.DataFrame:
        """Prediction rows per judge × strategy × input type."""
        return self.predictions.groupby(CELL).size().reset_index(name="rows")

    @property
    def summary(self) -> str:
        """One line on what was loaded, for the notebook's first output."""
        if self.predictions is None:
            return f"reports in {self.reports_dir}"
        return (f"{len(self.predictions)} predictions, {self.predictions['judge'].nunique()} judge(s), "
                f"{len(self.cells)} judge cell(s)")


def setup(predictions_dir: str | Path | None = None, reports_dir: str | Path | None = None,
          dataset: str = "emoprefer", data_dir: str | Path | None = None, *,
          paper: str | Path | None = None, predictions: bool = True,
          require_predictions: bool = True) -> Analysis:
    """The notebook preamble: folders, predictions of ``dataset``, the paper's table.

    ``None`` folders are the project's (``data/predictions``, ``reports``). ``predictions=False``
    loads nothing (notebooks that read only data or params); ``require_predictions=False``
    accepts an empty store instead of stopping with the "run the judges first" message.
    ``paper``: another YAML of reported numbers than ``params/paper_results.yaml``."""
    reports = Path(reports_dir) if reports_dir else paths.reports_dir()
    for folder in (reports / "tables", reports / "figures"):
        folder.mkdir(parents=True, exist_ok=True)
    loaded = load_predictions(predictions_dir, dataset, data_dir) if predictions else None
    left_out = left_out_runs(predictions_dir) if predictions else None
    if left_out is not None and not left_out.empty:
        listing = ", ".join(f"{r.run_id} ({r.status}, {r.rows} rows)" for r in left_out.itertuples())
        warnings.warn(f"{len(left_out)} run(s) left out because they are not complete: {listing}", stacklevel=2)
    if loaded is not None and loaded.empty and require_predictions:
        raise RuntimeError(f"no {dataset} predictions under {predictions_dir or paths.predictions_dir()}: "
                           + EMPTY_HINT)
    return Analysis(
        dataset=dataset, data_dir=Path(data_dir) if data_dir else None,
        predictions_dir=Path(predictions_dir) if predictions_dir else paths.predictions_dir(),
        reports_dir=reports, paper=paper_results(paper), predictions=loaded, left_out=left_out,
    )
