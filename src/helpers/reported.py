"""The paper's reported results: the one reader of ``params/paper_results.yaml``, as typed rows.

Why one reader: the report, the confound audit and the tournament demonstration each quote the
paper (its best judge, its human agreement); when each parsed the YAML its own way, the same
"best judge" could be picked by three rules and the human bound was read by walking any key
that contained "human". Here the file is parsed and validated once into :class:`PaperResults`
(rows :class:`ReportedJudge`, the bound :class:`HumanAgreement`); everything else takes that
object. Every number it holds is *reported by the paper*, never a result of this study.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from helpers import paths

REPORTED = "reported by the paper"
JUDGE_FIELDS = ("judge", "strategy", "two_class_waf", "two_class_acc", "swap_consistency")


@dataclass(frozen=True)
class ReportedJudge:
    """One row of the paper's main table: a judge at its best strategy (percent)."""

    judge: str
    strategy: str
    two_class_waf: float
    two_class_acc: float
    swap_consistency: float


@dataclass(frozen=True)
class HumanAgreement:
    """Agreement between annotators as the paper reports it, measured on the annotated pairs
    before the unanimity filter that kept v1 (on v1 itself the annotators agree by construction):
    ``two_class`` with the ``same`` votes removed, ``with_ties`` counting ``same`` as a class."""

    two_class: float
    with_ties: float | None = None


@dataclass(frozen=True)
class Annotation:
    """How the paper's labels were collected: v1 kept the ``v1_kept_unanimous`` of
    ``v1_annotated_pairs`` pairs on which all ``v1_annotators`` agreed; v2 holds ``v2_pairs``
    single-annotator labels from a pool of ``v2_annotator_pool``."""

    v1_annotated_pairs: int
    v1_annotators: int
    v1_kept_unanimous: int
    v2_pairs: int
    v2_annotator_pool: int


@dataclass(frozen=True)
class PaperResults:
    """The parsed ``params/paper_results.yaml``; empty (falsy) when the file is absent."""

    judges: tuple[ReportedJudge, ...] = ()
    human: HumanAgreement | None = None
    source: Mapping[str, str] = field(default_factory=dict)
    annotation: Annotation | None = None

    def __bool__(self) -> bool:
        return bool(self.judges) or self.human is not None

    def table(self) -> pd.DataFrame:
        """The judges as a table (one row each, the columns of :data:`JUDGE_FIELDS`)."""
        return pd.DataFrame([vars(j) for j in self.judges], columns=list(JUDGE_FIELDS))

    def best(self) -> ReportedJudge | None:
        """The judge with the highest two-class WAF; an exact tie goes to the name that sorts first
        (the report's one tie rule)."""
        if not self.judges:
            return None
        return sorted(self.judges, key=lambda j: (-j.two_class_waf, j.judge))[0]

    @property
    def human_two_class(self) -> float | None:
        return self.human.two_class if self.human else None

    @classmethod
    def from_mapping(cls, parsed: Mapping | None, where: str = "paper results") -> PaperResults:
        """Validate a parsed YAML mapping (``source``, ``human_agreement``, ``judges``)."""
        if not parsed:
            return cls()
        if not isinstance(parsed, Mapping):
            raise ValueError(f"{where}: must be a YAML mapping (source, human_agreement, judges), "
                             f"got {type(parsed).__name__}")
        judges = []
        for i, row in enumerate(parsed.get("judges") or [], start=1):
            missing = [f for f in JUDGE_FIELDS if not isinstance(row, Mapping) or f not in row]
            if missing:
                raise ValueError(f"{where}: judges row {i} lacks {', '.join(missing)}")
            try:
                judges.append(ReportedJudge(str(row["judge"]), str(row["strategy"]),
                                            *(float(row[f]) for f in JUDGE_FIELDS[2:])))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: judges row {i} ({row['judge']}): {exc}") from exc
        human = parsed.get("human_agreement")
        if human is not None:
            if not isinstance(human, Mapping) or "two_class" not in human:
                raise ValueError(f"{where}: human_agreement must be a mapping with two_class (and with_ties)")
            ties = human.get("with_ties")
            human = HumanAgreement(float(human["two_class"]), None if ties is None else float(ties))
        annotation = parsed.get("annotation")
        if annotation is not None:
            try:
                annotation = Annotation(**{k: int(v) for k, v in annotation.items()})
            except (AttributeError, TypeError, ValueError) as exc:
                raise ValueError(f"{where}: annotation: {exc}") from exc
        return cls(tuple(judges), human, dict(parsed.get("source") or {}), annotation)


def paper_file() -> Path:
    """Where the paper's reported numbers live: ``params/paper_results.yaml``."""
    return paths.params_dir() / "paper_results.yaml"


def paper_results(path: str | Path | None = None) -> PaperResults:
    """The numbers reported by the paper (``params/paper_results.yaml`` unless ``path``), typed.

    Empty when the file is absent, so a chapter can say that no reported numbers are shown
    instead of failing; a file that is not a valid table is refused by name and row."""
    path = Path(path) if path else paper_file()
    if not path.is_file():
        return PaperResults()
    return PaperResults.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
