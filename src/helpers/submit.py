"""Write a challenge submission (MER2026 Track 3, "MER-Prefer") from one judge's run or a vote of several.

``python -m helpers.submit RUN [RUN ...] --out submission.csv`` reads the runs (run folders, or
run ids under the predictions store), turns their a1/a2/same verdicts into one two-class answer
per pair by :data:`helpers.stats.voting.TWO_CLASS_RULE` (majority over both orders and every
round; with several runs, the top-k vote: the runs in the order given, best first, ``--top-k``
keeps the first k), and writes one row per pair of the runs' pair file, in that file's order:
``name`` (the video), ``pair_id`` where names repeat, ``preference`` (a1 or a2, never same).

It refuses, writing nothing, when a pair has no answer (an unfinished run), when the runs were
made on different pair files, or when the pair file changed since (its sha256 is in each run's
identity). When the pair file is labelled, the submission's own two-class WAF and accuracy are
printed beside how many answers each part of the rule decided, so a "same"-free submission can be
compared with the paper's two-class numbers (which read a predicted same as a1).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from helpers import paths
from helpers.data import DataError, PairFile, read_pair_file
from helpers.run import store
from helpers.run.results import stored_rows
from helpers.stats.metrics import CELL, two_class
from helpers.stats.voting import TWO_CLASS_RULE, two_class_answers, vote_columns


@dataclasses.dataclass(frozen=True)
class Submission:
    """The answers, the file they answer, and the rows to write."""

    pair_file: PairFile
    answers: pd.DataFrame  # one row per pair in file order (two_class_answers' columns)
    runs: list[str]

    def table(self) -> pd.DataFrame:
        """The submission's rows: ``name``, ``pair_id`` where the file keys pairs by id, ``preference``."""
        pairs = self.pair_file.pairs
        out = pd.DataFrame({"name": pairs["media_name"]})
        if self.pair_file.keyed:
            out["pair_id"] = pairs["name"]
        out["preference"] = self.answers["answer"].to_numpy()
        return out

    def scores(self) -> dict[str, float] | None:
        """Two-class WAF and accuracy (percent) against the file's labels; None when unlabelled."""
        if not self.pair_file.labelled:
            return None
        result = two_class(self.pair_file.pairs["preference"], self.answers["answer"])
        return {"two_class_waf": 100 * result["waf"], "two_class_acc": 100 * result["acc"],
                "pairs_scored": int(self.pair_file.pairs["preference"].isin(["a1", "a2"]).sum())}


def run_folder(source: str, root: Path) -> Path:
    """A run given as its folder, or as its run id under the store ``root``."""
    folder = Path(source).expanduser()
    if (folder / "manifest.json").is_file():
        return folder
    store.check_run_id(source)
    if (root / source / "manifest.json").is_file():
        return root / source
    raise DataError(f"{source}: neither a run folder nor a run id under {root} (no manifest.json)")


def _pair_file(folders: Sequence[Path]) -> PairFile:
    """The one pair file every run was made on, re-read and checked against their identities."""
    manifests = {f: store.read_manifest(f) for f in folders}
    missing = [f for f, m in manifests.items() if m is None or not m.pair_file]
    if missing:
        raise DataError(f"run {missing[0]} was not made on a pair file (-p dataset PATH.csv or track3_*): "
                        "nothing to submit")
    files = {m.pair_file for m in manifests.values()}
    hashes = {tuple(sorted((m.data_sha256 or {}).items())) for m in manifests.values()}
    if len(hashes) > 1:
        raise DataError(f"the runs were made on different pair files ({', '.join(sorted(files))}); "
                        "a vote needs every judge on the same pairs")
    first = manifests[folders[0]]
    source = read_pair_file(first.pair_file, dataset=first.dataset)
    if {source.path.name: source.sha256} != dict(next(iter(hashes))):
        raise DataError(f"{source.path} changed since the runs were made (its sha256 differs from their identity); "
                        "re-run the judges on it (overwrite=True) before submitting")
    return source


def build(sources: Sequence[str], top_k: int | None = None, seed: int = 0,
          root: str | Path | None = None) -> Submission:
    """The two-class answers of the runs ``sources`` (best-ranked first; the first ``top_k``)."""
    root = Path(root) if root is not None else paths.predictions_dir()
    if top_k is not None and not 1 <= top_k <= len(sources):
        raise ValueError(f"--top-k must be between 1 and the number of runs ({len(sources)}), got {top_k}")
    folders = [run_folder(s, root) for s in sources][: top_k or len(sources)]
    source = _pair_file(folders)
    keys = pd.Index(source.pairs["name"])
    votes = []
    for folder in folders:
        rows = stored_rows(folder.parent, [folder.name])
        cell = tuple(rows[CELL].iloc[0]) if len(rows) else ("", "", "")
        votes.append(vote_columns(rows, cell, keys, ("normal", "reverse")))
    answers = two_class_answers(votes, keys, seed)
    return Submission(pair_file=source, answers=answers, runs=[f.name for f in folders])


def write(submission: Submission, out: str | Path) -> Path:
    """Write the submission CSV; refuse (writing nothing) when a pair has no answer."""
    missing = submission.answers.loc[submission.answers["answer"].isna(), "name"]
    if len(missing):
        raise DataError(f"{len(missing)} of {len(submission.answers)} pairs have no answer in run(s) "
                        f"{', '.join(submission.runs)} (e.g. {', '.join(missing.head(5))}); finish the runs "
                        "(run the same command again to resume) before writing a submission")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    submission.table().to_csv(tmp, index=False)
    tmp.replace(out)
    return out


def summary(submission: Submission) -> str:
    """What the rule decided, and the two-class scores where the pair file has labels."""
    counts = submission.answers["decided_by"].value_counts()
    lines = [f"pairs: {len(submission.answers)} from {submission.pair_file.path}",
             f"runs (best first): {', '.join(submission.runs)}",
             "decided by: " + ", ".join(f"{k} {int(v)}" for k, v in counts.items()),
             f"rule: {TWO_CLASS_RULE}"]
    scores = submission.scores()
    lines.append("labels: none (no metrics)" if scores is None else
                 f"two-class WAF {scores['two_class_waf']:.2f}, accuracy {scores['two_class_acc']:.2f} "
                 f"on {scores['pairs_scored']} labelled a1/a2 pairs (same-labelled pairs dropped)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.submit", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders or run ids, best-ranked judge first")
    parser.add_argument("--out", required=True, help="the submission CSV to write")
    parser.add_argument("--top-k", type=int, default=None, help="vote with the first k runs only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tie-breaking coin")
    parser.add_argument("--store", default=None, help="predictions store of run ids (default data/predictions)")
    args = parser.parse_args(argv)
    try:
        submission = build(args.runs, args.top_k, args.seed, args.store)
        out = write(submission, args.out)
    except (DataError, store.StoreError) as exc:  # the runs or the pair file: data
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # the command's own arguments
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(submission))
    print(f"wrote {out} ({len(submission.answers)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
