"""Probe pairs that separate what a judge responds to: length, or the emotional content.

On EmoPrefer v1's human labels the longer text and the MER-Caption+ text coincide in almost every
pair, so the labels cannot tell length from the writer's style. A judge's verdicts can, because a
text can be edited: each probe changes one thing of v1's own descriptions and holds the rest
(``params/probes.yaml`` documents the sentences, the antonym map and the label conventions).

- **verbosity**: a pair's shorter description against itself padded with neutral sentences to the
  length of the pair's longer text. Preference = the original; a judge's share of verdicts for the
  padded copy is its *verbosity sensitivity* (50 % = indifferent, 100 % = always the longer copy).
- **length_matched**: each v1 pair with its shorter text padded to the longer one's length, the
  human label kept (assumption: neutral padding does not change which text is better), so a
  judge's agreement with humans there is what it gets from writer and content once length is equal.
- **content**: a description against a copy whose emotion words are replaced by opposite-valence
  words, only where the whole text stays within the length tolerance. Preference = the original;
  the share of verdicts for it is the *content sensitivity*. A judge without the video can only use
  the text's internal consistency (the copy's emotion words contradict the cues it describes).

The probe files are ordinary pair files (``name, a1, a2, preference`` and a with-modelnames file)
registered in ``params/datasets.yaml`` with ``folder: probes``: :func:`write_probe_files` writes
them into ``data/probes/`` (``python -m helpers.stats.probes``; ``make report`` runs it before the
judges, and :func:`helpers.data.resolve_data_dir` runs it when the files are missing), and a run's
identity records their sha256 like v1's. Everything is a function of v1's files, the YAML and the
seed: the same inputs give byte-identical files.

The metrics (:func:`probe_table`) count every verdict of both orders and all rounds, so position
bias cancels, and their 95 % intervals come from the package's one pair bootstrap
(:func:`helpers.stats.metrics.bootstrap_weights`): pairs are resampled with all their verdicts.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from helpers import paths
from helpers.data import DataError, dataset_spec, load_pairs, sha256_file, swap_label
from helpers.stats import metrics

PROBES = ("verbosity", "length_matched", "content")
WORD = re.compile(r"[A-Za-z]+")
COLUMNS = ["name", "a1", "a2", "preference"]
NAMED_COLUMNS = ["name", "model1", "a1", "model2", "a2", "preference"]


@dataclass(frozen=True)
class ProbeConfig:
    """``params/probes.yaml``, checked: no padding sentence holds an emotion word."""

    base_dataset: str
    seed: int
    tolerance: float
    datasets: dict[str, str]
    neutral_sentences: tuple[str, ...]
    antonyms: dict[str, str]

    def window(self, target: int) -> tuple[float, float]:
        """The lengths (characters) accepted for a text aimed at ``target``."""
        return target * (1 - self.tolerance), target * (1 + self.tolerance)


@cache
def emotion_words() -> tuple[tuple[str, ...], str]:
    """The documented emotion-word list and placeholder of ``params/emotion_words.yaml`` (the one
    reader of that file: the probes here and the tournament demo's masked system use it)."""
    raw = yaml.safe_load((paths.params_dir() / "emotion_words.yaml").read_text(encoding="utf-8"))
    return tuple(raw["words"]), str(raw.get("placeholder", "_"))


def emotion_vocabulary() -> frozenset[str]:
    """The words of ``params/emotion_words.yaml``, lower case."""
    return frozenset(w.lower() for w in emotion_words()[0])


def emotion_words_in(text: str, vocabulary: frozenset[str] | None = None) -> list[str]:
    """The whole words of ``text`` that are emotion words (case-insensitive)."""
    vocabulary = emotion_vocabulary() if vocabulary is None else vocabulary
    return [w for w in WORD.findall(text) if w.lower() in vocabulary]


def load_config(path: str | Path | None = None) -> ProbeConfig:
    """Read and check the probe parameters; a sentence with an emotion word is refused by name."""
    path = Path(path) if path else paths.params_dir() / "probes.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        config = ProbeConfig(
            base_dataset=str(raw["base_dataset"]), seed=int(raw["seed"]), tolerance=float(raw["tolerance"]),
            datasets={p: str(raw["datasets"][p]) for p in PROBES},
            neutral_sentences=tuple(str(s).strip() for s in raw["neutral_sentences"]),
            antonyms={str(k).lower(): str(v).lower() for k, v in raw["antonyms"].items()})
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the probe parameters ({type(exc).__name__}: {exc})") from None
    vocabulary = emotion_vocabulary()
    for sentence in config.neutral_sentences:
        found = emotion_words_in(sentence, vocabulary)
        if found:
            raise DataError(f"{path}: neutral sentence {sentence!r} holds emotion word(s) {', '.join(found)}")
    unknown = sorted(set(config.antonyms) - vocabulary)
    if unknown:
        raise DataError(f"{path}: antonym key(s) {', '.join(unknown)} are not in params/emotion_words.yaml")
    if not 0 < config.tolerance < 0.5 or not config.neutral_sentences:
        raise DataError(f"{path}: tolerance must be in (0, 0.5) and neutral_sentences non-empty")
    return config


# --------------------------------------------------------------------------- the edits


def _rng(seed: int, *key: str) -> np.random.Generator:
    """A generator for one text, from the seed and the text's key: a pair's edit does not depend
    on which other pairs exist or in which order they are made."""
    digest = hashlib.sha256("\x00".join([str(seed), *key]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def pad(text: str, window: tuple[float, float], config: ProbeConfig, rng: np.random.Generator) -> str | None:
    """``text`` followed by neutral sentences until its length (characters) is within ``window``
    (lo, hi), or None when no draw of the sentences lands in it.

    Sentences come in a seeded order, each used once before any repeats; where the next one would
    overshoot, the first later one that fits is taken instead."""
    lo, hi = window
    out = text.rstrip()
    if len(out) >= lo:
        return out if len(out) <= hi else None
    pool: list[str] = []
    while len(out) < lo:
        if not pool:
            pool = [config.neutral_sentences[i] for i in rng.permutation(len(config.neutral_sentences))]
        fits = [s for s in pool if len(out) + 1 + len(s) <= hi]
        if not fits:
            return None
        pool.remove(fits[0])
        out = f"{out} {fits[0]}"
    return out


def matched_window(target: int, name: str, config: ProbeConfig) -> tuple[float, float]:
    """Where a shorter text is padded to: within the tolerance of ``target``, and on a seeded side
    of it (strictly shorter or strictly longer, one pair in two), so that which text of a
    length-matched pair is longer is a coin flip and the longer-text rule is at chance by construction."""
    lo, hi = config.window(target)
    return (lo, target - 1) if _rng(config.seed, "below", name).random() < 0.5 else (target + 1, hi)


def _cased(word: str, replacement: str) -> str:
    if word.isupper() and len(word) > 1:
        return replacement.upper()
    return replacement.capitalize() if word[0].isupper() else replacement


def flip_emotions(text: str, config: ProbeConfig) -> tuple[str, int]:
    """``text`` with each emotion word of the antonym map replaced by its opposite, in reading
    order, skipping a replacement that would take the text's length outside the tolerance of the
    original's; returns the copy and the number of words replaced."""
    lo, hi = config.window(len(text))
    pieces, last, delta, count = [], 0, 0, 0
    for match in WORD.finditer(text):
        word = match.group(0)
        opposite = config.antonyms.get(word.lower())
        if opposite is None:
            continue
        change = len(opposite) - len(word)
        if not lo <= len(text) + delta + change <= hi:
            continue
        pieces += [text[last:match.start()], _cased(word, opposite)]
        last, delta, count = match.end(), delta + change, count + 1
    pieces.append(text[last:])
    return "".join(pieces), count


# --------------------------------------------------------------------------- the probe pairs


def _place(name: str, original: str, edited: str, writer: str, config: ProbeConfig, probe: str) -> dict:
    """One probe pair: the original on a seeded side, preference = the original."""
    first = _rng(config.seed, probe, "side", name).random() < 0.5
    a1, a2 = (original, edited) if first else (edited, original)
    return {"name": name, "model1": writer, "a1": a1, "model2": writer, "a2": a2,
            "preference": "a1" if first else "a2"}


def _shorter(row) -> tuple[str, str, str, int]:
    """The shorter text of a v1 pair, its side, its writer, and the longer one's length."""
    side = "a1" if len(row.a1) <= len(row.a2) else "a2"
    other = swap_label(side)
    return getattr(row, side), side, getattr(row, f"model{side[1]}"), len(getattr(row, other))


def build_probes(pairs: pd.DataFrame, config: ProbeConfig) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The three probe tables built from ``pairs`` (v1: name, a1, a2, preference, model1, model2)
    and a summary of how many pairs each probe kept and why the others were left out."""
    if not {"model1", "model2"} <= set(pairs.columns):
        pairs = pairs.assign(model1="unknown", model2="unknown")
    verbosity, matched, content = [], [], []
    dropped = {p: {} for p in PROBES}
    for row in pairs.itertuples(index=False):
        text, side, writer, target = _shorter(row)
        already = len(text.rstrip()) >= config.window(target)[0]
        padded = text.rstrip() if already else pad(text, matched_window(target, row.name, config), config,
                                                   _rng(config.seed, "pad", row.name))
        if padded is None:
            dropped["verbosity"]["no padding lands within the tolerance"] = dropped["verbosity"].get(
                "no padding lands within the tolerance", 0) + 1
            dropped["length_matched"]["no padding lands within the tolerance"] = dropped["length_matched"].get(
                "no padding lands within the tolerance", 0) + 1
        else:
            if already:
                reason = "texts already within the tolerance of each other (nothing to pad)"
                dropped["verbosity"][reason] = dropped["verbosity"].get(reason, 0) + 1
            else:
                verbosity.append(_place(row.name, text, padded, writer, config, "verbosity"))
            edited = row._asdict() | {side: padded}
            matched.append({c: edited[c] for c in NAMED_COLUMNS})
        flips = {s: flip_emotions(getattr(row, s), config) for s in ("a1", "a2")}
        best = max(("a1", "a2"), key=lambda s: (flips[s][1], len(getattr(row, s)), s == "a1"))
        copy, count = flips[best]
        if count == 0:
            reason = "no emotion word of the antonym map fits the tolerance"
            dropped["content"][reason] = dropped["content"].get(reason, 0) + 1
        else:
            content.append(_place(row.name, getattr(row, best), copy, getattr(row, f"model{best[1]}"), config,
                                  "content"))
    tables = {"verbosity": verbosity, "length_matched": matched, "content": content}
    frames = {p: pd.DataFrame(rows, columns=NAMED_COLUMNS) for p, rows in tables.items()}
    summary = pd.DataFrame([
        {"probe": p, "dataset": config.datasets[p], "pairs": len(frames[p]), "left_out": sum(dropped[p].values()),
         "why_left_out": "; ".join(f"{n} {why}" for why, n in dropped[p].items()) or "-"}
        for p in PROBES])
    return frames, summary


def probe_folder() -> Path:
    """``data/probes/``: generated, never committed (``data/`` is ignored)."""
    return paths.data_dir() / "probes"


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write only when the content differs, via a temporary file (a killed write leaves no half file)."""
    text = frame.to_csv(index=False, lineterminator="\n")
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_probe_files(folder: str | Path | None = None, data_dir: str | Path | None = None,
                      config: ProbeConfig | None = None) -> pd.DataFrame:
    """Generate every probe file from the base dataset into ``folder`` (``data/probes/``);
    returns the summary with each written file's sha256 (the hash a run's identity records)."""
    config = config or load_config()
    folder = Path(folder) if folder else probe_folder()
    folder.mkdir(parents=True, exist_ok=True)
    frames, summary = build_probes(load_pairs(config.base_dataset, "normal", data_dir), config)
    hashes = []
    for probe in PROBES:
        files = dataset_spec(config.datasets[probe]).files
        plain, named = folder / files["normal"], folder / files["modelnames"]
        _write_csv(frames[probe][COLUMNS], plain)
        _write_csv(frames[probe][NAMED_COLUMNS], named)
        hashes.append(sha256_file(plain))
    return summary.assign(sha256=hashes)


def probe_of(dataset: str, config: ProbeConfig | None = None) -> str | None:
    """Which probe a dataset key is (None for an ordinary dataset)."""
    config = config or load_config()
    return {d: p for p, d in config.datasets.items()}.get(dataset)


# --------------------------------------------------------------------------- the metrics


def _pair_shares(predictions: pd.DataFrame, want: str) -> pd.Series:
    """Per pair, the share of its verdicts (both orders, all rounds) for the ``want`` text:
    ``original`` (the label) or ``edited`` (the other side), a tie (``same``) counting half, so
    that 50 means "does not respond" whether a judge ties or picks at random."""
    target = predictions["gt"] if want == "original" else predictions["gt"].map(swap_label)
    score = (predictions["pred"] == target).astype(float) + 0.5 * (predictions["pred"] == "same")
    return score.groupby(predictions["name"]).mean().sort_index()


def share_with_interval(shares: pd.Series, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the per-pair shares (x100) and its pair-bootstrap percentile interval."""
    values = shares.to_numpy(float)
    if values.size == 0:
        return (np.nan, np.nan, np.nan)
    boot = metrics.bootstrap_weights(values.size, n_boot, seed) @ values / values.size
    lo, hi = metrics.percentile_ci(boot, level)
    return 100 * float(values.mean()), 100 * lo, 100 * hi


TABLE_COLUMNS = [
    "judge", "strategy", "input_type",
    "verbosity", "verbosity_lo", "verbosity_hi", "verbosity_pairs",
    "matched_waf", "matched_waf_lo", "matched_waf_hi", "matched_pairs",
    "content", "content_lo", "content_hi", "content_pairs",
]


def probe_table(by_probe: dict[str, pd.DataFrame], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per judge cell run on any probe: verbosity sensitivity (% of verdicts for the padded
    copy, a tie counting half), length-matched two-class WAF against the human labels (the paper's metric, normal order,
    mean over rounds, as in the main table) and content sensitivity (% of verdicts for the original, a tie half),
    each with its 95 % pair-bootstrap interval; NaN where a judge was not run on that probe."""
    cells: dict[tuple, dict] = {}
    for probe, table in by_probe.items():
        if table is None or table.empty:
            continue
        for key, cell in table.groupby(metrics.CELL, sort=True):
            row = cells.setdefault(key, dict(zip(metrics.CELL, key, strict=True)))
            if probe == "verbosity":
                value, lo, hi = share_with_interval(_pair_shares(cell, "edited"), n_boot, seed)
                row |= {"verbosity": value, "verbosity_lo": lo, "verbosity_hi": hi,
                        "verbosity_pairs": cell["name"].nunique()}
            elif probe == "content":
                value, lo, hi = share_with_interval(_pair_shares(cell, "original"), n_boot, seed)
                row |= {"content": value, "content_lo": lo, "content_hi": hi,
                        "content_pairs": cell["name"].nunique()}
            else:
                scored = metrics.metrics_table(cell, n_boot=n_boot, seed=seed).iloc[0]
                row |= {"matched_waf": scored["two_class_waf"], "matched_waf_lo": scored["two_class_waf_lo"],
                        "matched_waf_hi": scored["two_class_waf_hi"], "matched_pairs": cell["name"].nunique()}
    out = pd.DataFrame(list(cells.values()), columns=TABLE_COLUMNS)
    return out.sort_values(metrics.CELL, kind="mergesort").reset_index(drop=True)


def fill_command(judge: str, datasets: dict[str, str]) -> str:
    """The command that runs ``judge`` on every probe (add ``-p media_dir DIR`` for a judge that watches)."""
    keys = " ".join(datasets.values())
    return (f"for d in {keys}; do papermill notebooks/01_infer.ipynb reports/runs/{judge}__$d.ipynb "
            f"-p model {judge} -p dataset $d; done")


def pending_rows(table: pd.DataFrame, judges: Sequence[str], datasets: dict[str, str]) -> pd.DataFrame:
    """Rows for judges that have no probe run yet, each naming the command that fills it."""
    done = set(table["judge"])
    rows = [{"judge": j, "command": fill_command(j, datasets)} for j in dict.fromkeys(judges) if j not in done]
    return pd.DataFrame(rows, columns=["judge", "command"])


def judges_to_fill(run_on_base: Sequence[str]) -> list[str]:
    """The judges the probe table should have a row for: every judge run on the base dataset
    here, and the paper's MLLM judges (``params/grid_paper.yaml``), whose rows fill in once run."""
    from helpers.run.launch import GridError, load_grid

    try:
        paper = [cell.model for cell in load_grid(paths.params_dir() / "grid_paper.yaml").cells]
    except GridError:
        paper = []
    return list(dict.fromkeys([*run_on_base, *paper]))


def display_table(table: pd.DataFrame, pending: pd.DataFrame) -> pd.DataFrame:
    """The probe table as the report shows it: display names, each figure with its interval
    (``x, x_lo, x_hi`` for ``show(..., intervals=True)``), and the pending judges with the
    command that fills their row."""
    from helpers.report import names

    shown = table.assign(judge=[names.judge(j) if s == "-" else f"{names.judge(j)} ({s}, {i})"
                                for j, s, i in zip(table["judge"], table["strategy"], table["input_type"], strict=True)])
    shown = shown[["judge", "verbosity", "verbosity_lo", "verbosity_hi", "matched_waf", "matched_waf_lo",
                   "matched_waf_hi", "content", "content_lo", "content_hi"]].assign(fill_command="")
    waiting = pending.rename(columns={"command": "fill_command"}).assign(judge=lambda f: f["judge"].map(names.judge))
    return pd.concat([shown, waiting], ignore_index=True) if len(waiting) else shown


def load_probe_predictions(root: str | Path | None, config: ProbeConfig | None = None) -> dict[str, pd.DataFrame]:
    """Every probe's predictions in the store, scored against the probe files as they are now
    (``helpers.run.results.load_predictions``: a run made on other probe files is refused)."""
    # the store's reader, imported here: data.py imports this module to generate the probe files
    from helpers.run.results import load_predictions

    config = config or load_config()
    return {probe: load_predictions(root, dataset) for probe, dataset in config.datasets.items()}


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.stats.probes",
                                     description="generate the probe pair files into data/probes/")
    parser.add_argument("--data-dir", default=None, help="folder with the base dataset's CSVs (default: $EMOPREFER_DATA)")
    parser.add_argument("--out", default=None, help="where to write them (default: data/probes/)")
    args = parser.parse_args(argv)
    try:
        summary = write_probe_files(args.out, args.data_dir)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(summary.assign(sha256=summary["sha256"].str[:12]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
