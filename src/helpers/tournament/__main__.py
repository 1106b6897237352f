"""Command line of a tournament: ``python -m helpers.tournament validate|design|judge|rank``.

Arguments are validated before any work: a bad flag value (``--budget 0``, ``--rounds 0``,
``--strategy S9``, ``--prior -1``, ``--n-boot -5``, ``--out`` naming a file) is a usage error,
one line naming the argument and what it accepts, exit status 2. Bad data ends with
``error: ...`` on stderr and exit status 1, never a traceback: a bad table (or one that is not
the Parquet its name says), a folder without a design, a design cut short or edited (refused by
its hash), a corrupt manifest, a stored design drawn from another table, budget or seed, a judge
that does not exist. An interrupted ``judge`` stops its worker processes and exits 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from helpers.data import DataError
from helpers.judges.base import STRATEGIES
from helpers.run.store import write_atomic
from helpers.stats.bt import MIN_RANK_BOOT, ranks_withheld
from helpers.tournament.design import (
    check_design,
    design_differences,
    design_pairs,
    has_design,
    read_design,
    redraw_hint,
    to_pairs,
    write_design,
)
from helpers.tournament.judge import adaptive_universe, judge_tournament, tournament_predictions, unfinished
from helpers.tournament.rank import (
    CELL,
    STYLES,
    comparisons_from_predictions,
    human_report,
    leaderboard,
    length_warnings,
    load_human,
    unjudged,
)
from helpers.tournament.table import coverage, load_entries, missing_report, system_id

DESCRIPTION = "MER-style tournaments: rank many description systems with a judge instead of with humans."


def _rank_outputs(folder: Path, entries: pd.DataFrame, args: argparse.Namespace) -> dict[str, pd.DataFrame]:
    """The rank step's tables; refused (DataError naming the unfinished shards or batches and
    the command that completes them) when a judge has left design comparisons without a
    verdict, unless ``--partial``, when every table carries a ``partial`` column "partial: n of N"."""
    design = check_design(folder, entries, args.table)
    pairs = to_pairs(design.pairs, entries)
    universe = adaptive_universe(entries) if design.manifest.get("design") == "adaptive" else None
    predictions = tournament_predictions(folder / "predictions", pairs, universe)
    missing = unjudged(predictions, pairs)
    if len(missing) and not args.partial:
        judges = " ".join(f"--judge {j}" for j in sorted(missing["judge"].unique()))
        how = (f"python -m helpers.tournament judge {args.table} --out {folder} --adaptive {judges}" if "batch" in pairs
               else f"python -m helpers.tournament judge {args.table} --out {folder} {judges}")
        raise DataError("the judging is unfinished, so a leaderboard would be ranked on part of the design:\n  "
                        + "\n  ".join(unfinished(missing, pairs, predictions))
                        + f"\ncomplete it by running the judge command again with the settings it started with "
                          f"(it resumes), e.g. '{how} [--shards N ...]', or rank what is judged with --partial")
    comparisons = comparisons_from_predictions(predictions, pairs, partial=args.partial)
    board, coefs = leaderboard(comparisons, entries, n_boot=args.n_boot, seed=args.seed, reference=args.reference,
                               prior=args.prior, style=args.style)
    out = {"comparisons": comparisons, "leaderboard": board, "length_effect": coefs}
    if args.human:
        out["human_agreement"] = human_report(board, comparisons, load_human(args.human), n_boot=args.n_boot,
                                              seed=args.seed, prior=args.prior)
    if len(missing):
        judged = comparisons.groupby(CELL)["comparison"].nunique()
        label = {cell: f"partial: {n} of {len(pairs)}" for cell, n in judged.items()}
        for name, table in out.items():
            out[name] = table.assign(partial=[label.get(tuple(k), f"partial: 0 of {len(pairs)}")
                                              for k in table[CELL].itertuples(index=False)])
    return out


def _number(kind: type, low: float, what: str):
    """An argparse type: a ``kind`` number ``>= low``, else a usage error that says what is accepted."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number; {what}") from None
        if not value >= low:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"{text} is out of range; {what}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE = _number(int, 1, "give a whole number >= 1")
COUNT = _number(int, 0, "give a whole number >= 0")


def LEVEL(text: str) -> float:  # noqa: N802 - an argparse type, named like the others
    """A confidence level in [0.5, 1): ``5``, ``1``, ``inf`` and ``nan`` are usage errors."""
    value = _number(float, 0.5, "give a confidence level in [0.5, 1), e.g. 0.95")(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range; give a confidence level in [0.5, 1), e.g. 0.95")
    return value


PRIOR = _number(float, 0.0, "give a number >= 0 (virtual ties per pair of systems; a negative prior inverts the ranking)")


def parser() -> argparse.ArgumentParser:
    """The four sub-commands and their flags (the README's tournament section shows them in use)."""
    top = argparse.ArgumentParser(prog="python -m helpers.tournament", description=DESCRIPTION)
    sub = top.add_subparsers(dest="command", required=True)
    cmd = {name: sub.add_parser(name, help=text) for name, text in (
        ("validate", "check a long table (name, system, description) and report missing systems"),
        ("design", "draw the seeded pair design into OUT/design.csv + OUT/manifest.json"),
        ("judge", "judge the design's comparisons (both orders) into OUT/predictions/"),
        ("rank", "plain and style-controlled Bradley-Terry leaderboards into OUT/*.csv"),
    )}
    for name, p in cmd.items():
        p.add_argument("table", help="CSV or Parquet with columns name, system, description")
        if name != "validate":
            p.add_argument("--out", required=True, help="the tournament's folder")
    d = cmd["design"]
    d.add_argument("--budget", type=POSITIVE, default=None, help="comparisons per sample (default: full round-robin)")
    d.add_argument("--seed", type=COUNT, default=0)
    d.add_argument("--overwrite", action="store_true", help="replace a stored design drawn otherwise")
    j = cmd["judge"]
    # Not given: the stored design as drawn (or, with none, a round-robin drawn with seed 0).
    # Given: they must match the stored design, else judging is refused.
    j.add_argument("--budget", type=POSITIVE, default=argparse.SUPPRESS,
                   help="comparisons per sample; must match a stored design (default: the stored design's, else round-robin)")
    j.add_argument("--seed", type=COUNT, default=argparse.SUPPRESS,
                   help="design seed (must match a stored design) and judging seed (default 0)")
    j.add_argument("--judge", action="append", required=True, help="judge name from params/models (repeatable)")
    j.add_argument("--train", default="emoprefer",
                   help="learned judges (minilm_rm, source): labelled pairs to train on, a dataset (emoprefer: the v1 "
                        "benchmark) or a CSV/Parquet table name, a1, a2, preference (default emoprefer)")
    j.add_argument("--data-dir", default=None, help="folder with the dataset CSVs of --train")
    j.add_argument("--adaptive", action="store_true",
                   help="judge in batches, refit BT after each and draw the next batch where the order is uncertain")
    j.add_argument("--batch-size", type=POSITIVE, default=200, help="--adaptive: comparisons per batch")
    j.add_argument("--max-comparisons", type=POSITIVE, default=None,
                   help="--adaptive: stop after this many comparisons (default: every comparison the table allows)")
    j.add_argument("--level", type=LEVEL, default=0.95,
                   help="--adaptive: stop when every adjacent pair of systems is separated at this level")
    j.add_argument("--executor", choices=("local", "ray"), default="local")
    j.add_argument("--address", default=None, help="Ray cluster address ('auto', 'ray://host:10001'); default: local Ray")
    j.add_argument("--shards", type=POSITIVE, default=1, help="shards per judge")
    j.add_argument("--overwrite", action="store_true",
                   help="move run folders made with other judge code or settings aside (into predictions/.replaced/) "
                        "and judge them afresh, instead of refusing")
    j.add_argument("--workers", type=POSITIVE, default=1, help="local CPU processes (GPU machines: one per GPU)")
    j.add_argument("--rounds", type=POSITIVE, default=1)
    j.add_argument("--strategy", default="all", choices=("all", "-", *STRATEGIES))
    j.add_argument("--input-type", default=None)
    j.add_argument("--judge-llm", default="qwen25")
    j.add_argument("--engine", default="auto", help="auto, transformers, vllm or openai (as 01_infer's engine)")
    j.add_argument("--media-dir", default=None)
    r = cmd["rank"]
    r.add_argument("--human", default=None, help="CSV with name, system_a, system_b, winner (a/b/tie)")
    r.add_argument("--n-boot", type=COUNT, default=1000,
                   help=f"bootstrap replicates (below {MIN_RANK_BOOT}: ratings only, ranks and intervals withheld)")
    r.add_argument("--style", choices=tuple(STYLES), default="linear",
                   help="style control's length covariate: linear = (len a - len b) / (len a + len b) (Arena's), "
                        "log-length = log(len a / len b) (default linear)")
    r.add_argument("--partial", action="store_true",
                   help="rank a tournament whose judging is unfinished; every output is labelled 'partial: n of N'")
    r.add_argument("--seed", type=COUNT, default=0, help="bootstrap seed")
    r.add_argument("--reference", default=None)
    r.add_argument("--prior", type=PRIOR, default=1.0, help="virtual ties per pair of systems (>= 0)")
    return top


def _validate(args: argparse.Namespace, entries: pd.DataFrame) -> int:
    print(f"{args.table}: {entries['name'].nunique()} samples, {entries['system'].nunique()} systems, "
          f"{len(entries)} descriptions")
    print(coverage(entries).to_string(index=False))
    print(missing_report(entries) or "every system describes every sample")
    return 0


def _design(args: argparse.Namespace, entries: pd.DataFrame, folder: Path) -> int:
    """Draw and store the design; a stored design drawn otherwise is replaced only with --overwrite."""
    asked = {"budget": args.budget, "seed": args.seed}
    if has_design(folder) and not args.overwrite:
        stored = read_design(folder).manifest
        changed = design_differences(stored, entries, asked)
        if changed:
            raise DataError(f"{folder} already holds a design drawn otherwise: " + "; ".join(changed) + ". "
                            + redraw_hint(args.table, folder, stored, asked))
    design = design_pairs(entries, args.budget, args.seed)
    write_design(design, folder)
    print(f"design: {len(design.pairs)} comparisons ({design.manifest.get('design')}) in {folder}")
    return 0


def _judge(args: argparse.Namespace, entries: pd.DataFrame, folder: Path) -> int:
    """Judge the stored design (drawing one first when there is none), refusing a design that
    was drawn from another table or with another --budget/--seed than given."""
    if args.adaptive:
        return _judge_adaptive(args, entries, folder)
    asked = {key: getattr(args, key) for key in ("budget", "seed") if hasattr(args, key)}
    if has_design(folder) and read_design(folder).manifest.get("design") == "adaptive":
        raise DataError(f"{folder} holds an adaptive design: judge it with --adaptive (and the same settings), "
                        "or use a new --out folder")
    if not has_design(folder):
        write_design(design_pairs(entries, asked.get("budget"), asked.get("seed", 0)), folder)
    design = check_design(folder, entries, args.table, asked)
    print(f"design: {len(design.pairs)} comparisons ({design.manifest.get('design')}) in {folder}")
    summary = judge_tournament(
        to_pairs(design.pairs, entries), args.judge, folder / "predictions", training=_training(args, entries),
        tag=system_id(folder.resolve().name),
        executor=args.executor, shards=args.shards, workers=args.workers, address=args.address,
        rounds=args.rounds, seed=asked.get("seed", 0), strategy=args.strategy, input_type=args.input_type,
        judge_llm=args.judge_llm, engine=args.engine, media_dir=args.media_dir, overwrite=args.overwrite,
    )
    print(summary.to_string(index=False))
    return 0


def _training(args: argparse.Namespace, entries: pd.DataFrame) -> pd.DataFrame | None:
    """The labelled pairs learned judges train on, loaded only when one of the judges learns;
    a warning when they are in another script than the table (:func:`script_mismatch`)."""
    from helpers.tournament.judge import learns_from_labels, script_mismatch, training_pairs

    if not any(learns_from_labels(judge) for judge in args.judge):
        return None
    training = training_pairs(args.train, args.data_dir)
    print(f"learned judge(s) train on {args.train}: {len(training)} labelled pairs "
          f"({int(training['preference'].isin(['a1', 'a2']).sum())} decided)")
    warning = script_mismatch(training, entries["description"])
    if warning:
        print(warning, file=sys.stderr)
    return training


def _judge_adaptive(args: argparse.Namespace, entries: pd.DataFrame, folder: Path) -> int:
    """Judge in batches (:func:`helpers.tournament.judge.judge_adaptive`), refusing a stored
    design drawn otherwise or driven by another judge or judging."""
    from helpers.tournament.design import candidates
    from helpers.tournament.judge import adaptive_judging, judge_adaptive

    seed = getattr(args, "seed", 0)
    limit = args.max_comparisons or len(candidates(entries))
    training = _training(args, entries)
    judging = {"training": training, "rounds": args.rounds, "strategy": args.strategy, "input_type": args.input_type,
               "judge_llm": args.judge_llm}
    asked = {"design": "adaptive", "seed": seed, "batch_size": args.batch_size, "max_comparisons": limit,
             "level": args.level, **adaptive_judging(args.judge[0], judging)}
    if has_design(folder):
        check_design(folder, entries, args.table, asked)
    design = judge_adaptive(
        entries, folder, args.judge[0], batch_size=args.batch_size, max_comparisons=limit, seed=seed, level=args.level,
        tag=system_id(folder.resolve().name), executor=args.executor, shards=args.shards, workers=args.workers,
        address=args.address, engine=args.engine, media_dir=args.media_dir, **judging,
    )
    batches = design.manifest["batches"]
    print(f"adaptive design: {len(design.pairs)} comparisons in {len(batches)} batch(es) "
          f"({', '.join(str(b['n_comparisons']) for b in batches)}), stopped: {design.manifest['stopped']} ({folder})")
    return 0


def _rank(args: argparse.Namespace, entries: pd.DataFrame, folder: Path) -> int:
    outputs = _rank_outputs(folder, entries, args)
    for name, table in outputs.items():  # each whole or not at all: a full disk leaves the old file, not half a new one
        write_atomic(folder / f"{name}.csv", table.to_csv(index=False).encode("utf-8"), durable=True)
    board = outputs["leaderboard"]
    if "partial" in board.columns:
        print("PARTIAL leaderboard, ranked on the comparisons judged so far: "
              + "; ".join(f"{' '.join(map(str, k))}: {v}" for k, v in board.groupby(CELL)["partial"].first().items()))
    for line in length_warnings(outputs["length_effect"]):
        print(line)
    for r in outputs["length_effect"].itertuples():
        print(f"style control ({r.style}: {r.covariate}) for {r.judge} ({r.strategy}): coefficient {r.coef:.2f} "
              f"[{r.coef_lo:.2f}, {r.coef_hi:.2f}], deviance {r.deviance_plain:.1f} -> {r.deviance_style:.1f} "
              f"({r.deviance_reduction_pct:.1f}% less), {r.rating_variance_removed_pct:.0f}% of the plain ratings' "
              "variance removed")
    withheld = ranks_withheld(args.n_boot)
    if withheld:
        print(withheld)
        print(board[[*CELL, "method", "system", "rating"]].round(1).to_string(index=False))
    else:
        shown = board[[*CELL, "method", "rank", "system", "rating", "rating_lo", "rating_hi"]]
        print(shown.astype({"rank": "Int64"}).round(1).to_string(index=False))  # <NA>: no finite replicate
    print(f"wrote {', '.join(f'{n}.csv' for n in outputs)} to {folder}")
    return 0


def _check_out(top: argparse.ArgumentParser, out: Path) -> None:
    """``--out`` must be a folder or creatable as one: a file at it or above it is a usage error."""
    if out.exists() and not out.is_dir():
        top.error(f"argument --out: {out} is a file; --out names the tournament's folder (new or existing)")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                top.error(f"argument --out: {parent} is a file, so no folder {out} can be made under it")
            break


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; 0 on success, 2 for a bad argument (argparse's usage message), 1 with
    ``error: ...`` on stderr for bad data, 130 when interrupted."""
    from helpers.judges.registry import RegistryError
    from helpers.run.launch import ExecutorError
    from helpers.run.store import StoreError

    top = parser()
    args = top.parse_args(argv)
    if getattr(args, "adaptive", False):
        if len(args.judge) != 1:
            top.error("argument --adaptive: give exactly one --judge (the batches follow one judge's verdicts)")
        if hasattr(args, "budget"):
            top.error("argument --budget: not allowed with --adaptive (use --batch-size and --max-comparisons)")
        if getattr(args, "overwrite", False):
            top.error("argument --overwrite: not allowed with --adaptive (its batches were drawn from the stored "
                      "verdicts; start a new design in a new --out folder)")
    out = getattr(args, "out", None)
    if out is not None:
        _check_out(top, Path(out))
    try:
        entries = load_entries(args.table)
        if args.command == "validate":
            return _validate(args, entries)
        step = {"design": _design, "judge": _judge, "rank": _rank}[args.command]
        return step(args, entries, Path(args.out))
    except (DataError, RegistryError, ExecutorError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the disk, not the data: full, read-only, a path the system will not create
        where = exc.filename or getattr(args, "out", "")
        print(f"error: cannot write {where}: {exc.strerror or exc}; free space or choose a writable --out, then run "
              "the same command again (what was stored is kept)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: worker processes stopped; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
