"""Every number the abstract and the conclusion of the built report quote is recomputed here from
the computed tables (``reports/tables``), independently of ``helpers.report.variables``, and found
with the same value and the same rounding in the tables the page shows.

Runs on the page ``make report`` built; skipped, with the reason, where it has not been built.
"""

from __future__ import annotations

import html
import math
import re

import pandas as pd
import pytest
import yaml
from scipy import stats

from helpers import paths

FLOORS = {"length", "random", "always_a1"}
NUMBER = re.compile(r"(?<![\w.\-])\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
LITERALS = {"2026", "95", "50", "100"}  # the paper's year, the interval level, chance and an oracle


@pytest.fixture(scope="module")
def built():
    reports = paths.reports_dir()
    page, tables = reports / "index.html", reports / "tables"
    if not page.is_file() or not (tables / "results_main.csv").is_file():
        pytest.skip("the report has not been built (make report); nothing to check")
    return page.read_text(encoding="utf-8"), tables


def section(page: str, ident: str) -> str:
    """The text of a section, after its heading up to the next heading of level 1 or 2."""
    start = page.index(f'id="{ident}"')
    after_heading = re.split(r"</h[1-6]>", page[start:], maxsplit=1)[1]  # the heading's own number is not quoted
    body = re.split(r"<h[12][ >]", after_heading, maxsplit=1)[0]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def block(page: str, ident: str) -> str:
    """The HTML of an embedded table or figure, by its label."""
    start = page.index(f'id="{ident}"')
    return html.unescape(page[start:start + 200_000].split('class="embed-source"', 1)[0])


def wilson(percent: float, n: int) -> tuple[float, float]:
    """The Wilson score interval by its formula (percent)."""
    p, z = percent / 100, stats.norm.ppf(0.975)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100 * (centre - half), 100 * (centre + half)


def expected(tables) -> dict[str, tuple[str, str]]:
    """name -> (value as the tables show it, label of the table that shows it)."""
    f = "{:.2f}".format
    out: dict[str, tuple[str, str]] = {}
    metrics = pd.read_csv(tables / "metrics.csv")
    length = metrics[metrics["judge"] == "length"].iloc[0]
    for key in ("", "_lo", "_hi"):
        out[f"length waf{key}"] = (f(length[f"two_class_waf{key}"]), "tbl-results-main")
    rates = pd.read_csv(tables / "data_confound.csv").set_index("quantity")
    confound = rates.loc["longer description preferred"]
    count = round(confound["percent"] / 100 * confound["pairs"])
    lo, hi = wilson(confound["percent"], int(confound["pairs"]))  # the one interval of a share of pairs
    out["longer preferred"] = (f(confound["percent"]), "tbl-data-confound")
    out["longer preferred lo"], out["longer preferred hi"] = (f(lo), "tbl-data-confound"), (f(hi), "tbl-data-confound")
    out["longer count"], out["longer pairs"] = (str(count), ""), (str(int(confound["pairs"])), "")
    out["mercaption longer"] = (f(rates.loc["MER-Caption+ wrote the longer text (all pairs)", "percent"]), "tbl-data-confound")
    annotation = yaml.safe_load((paths.params_dir() / "paper_results.yaml").read_text())["annotation"]
    out["annotated"], out["annotators"] = (f"{annotation['v1_annotated_pairs']:,}", ""), (str(annotation["v1_annotators"]), "")
    labels = pd.read_csv(tables / "data_labels.csv").set_index("label")["pairs"]
    decided = int(labels.sum() - labels["same"])
    out["pairs"], out["decided"] = (str(int(labels.sum())), "tbl-data-confound"), (str(decided), "tbl-data-confound")
    paper = yaml.safe_load((paths.params_dir() / "paper_results.yaml").read_text())
    best = max(paper["judges"], key=lambda r: r["two_class_waf"])
    lo, hi = wilson(best["two_class_waf"], decided)
    out |= {"paper best": (f(best["two_class_waf"]), "tbl-results-main"),
            "paper best lo": (f(lo), "tbl-results-main"), "paper best hi": (f(hi), "tbl-results-main")}
    judged = pd.read_csv(tables / "confound_length.csv")
    judged = judged[~judged["judge"].isin(FLOORS)]
    top = judged.sort_values(["len_balanced_acc", "judge"], ascending=[False, True]).iloc[0]
    for key, column in (("", "len_balanced_acc"), (" lo", "len_balanced_lo"), (" hi", "len_balanced_hi")):
        out[f"balanced{key}"] = (f(top[column]), "tbl-results-main")
    at_chance = ((judged["len_balanced_lo"] <= 50) & (judged["len_balanced_hi"] >= 50)).sum()
    out["at chance"], out["graded judges"] = (str(at_chance), ""), (str(len(judged)), "")
    probes = pd.read_csv(tables / "probes.csv").dropna(subset=["verbosity", "matched_waf", "content"], how="all")
    out["probe judges"] = (str(probes["judge"].nunique()), "")
    shorter = pd.read_csv(tables / "confound_shorter.csv").set_index(["stratum", "feature"])
    emotion = shorter.loc[("shorter preferred", "emotion words per 100 words")]
    out["shorter pairs"] = (str(int(emotion["pairs"])), "tbl-confound-shorter")
    out["emotion preferred"] = (f(emotion["preferred"]), "tbl-confound-shorter")
    out["emotion rejected"] = (f(emotion["rejected"]), "tbl-confound-shorter")
    lost = shorter.loc[("longer preferred", "emotion words per 100 words")]
    out["emotion shorter rejected"] = (f(lost["rejected"]), "tbl-confound-shorter")
    tested = shorter["p"].dropna().sort_values()  # Holm over the table's tests, by its formula
    m = len(tested)
    holm = pd.Series([min(1.0, max((m - j) * tested.iloc[j] for j in range(i + 1))) for i in range(m)], index=tested.index)
    p = holm[("shorter preferred", "emotion words per 100 words")]
    out["emotion p"] = ("< 0.001" if p < 0.001 else f"{p:.3f}", "tbl-confound-shorter")
    out["emotion r"] = (f"{emotion['rank_biserial']:.2f}", "")
    return out


def test_every_number_in_the_abstract_and_conclusion_is_recomputed_from_the_tables(built):
    page, tables = built
    values = expected(tables)
    abstract, conclusion = section(page, "abstract"), section(page, "sec-conclusion")
    for name in ("length waf", "length waf_lo", "length waf_hi", "longer preferred", "longer preferred lo",
                 "longer preferred hi", "paper best", "paper best lo", "paper best hi", "balanced", "balanced lo",
                 "balanced hi", "shorter pairs", "emotion preferred", "emotion rejected", "emotion shorter rejected",
                 "pairs", "at chance", "graded judges", "longer count", "longer pairs", "mercaption longer",
                 "annotated", "annotators", "emotion r", "probe judges"):
        assert values[name][0] in abstract, f"the abstract does not quote {name} = {values[name][0]}"
    for name in ("longer preferred", "length waf", "paper best", "balanced", "shorter pairs"):
        assert values[name][0] in conclusion, f"the conclusion does not quote {name} = {values[name][0]}"
    p = values["emotion p"][0]
    assert (f"p {p}" if p.startswith("<") else f"p = {p}") in abstract
    known = {v.removeprefix("< ") for v, _ in values.values()} | LITERALS
    for text, where in ((abstract, "abstract"), (conclusion, "conclusion")):
        text = re.sub(r"\b(Section|Table|Figure) \d+", "", text)  # cross-references are not quoted numbers
        strays = [n for n in NUMBER.findall(text) if n not in known]
        assert not strays, f"the {where} quotes numbers no table gives: {strays}"


def test_the_quoted_numbers_appear_with_the_same_rounding_in_the_tables_shown(built):
    page, tables = built
    for name, (value, label) in expected(tables).items():
        if label:
            assert value in block(page, label), f"{name} = {value} is not shown in {label}"


def test_every_var_shortcode_of_the_chapters_has_a_value_in_the_generated_file(built):
    values = yaml.safe_load((paths.project_root() / "_variables.yml").read_text(encoding="utf-8"))
    missing = []
    for chapter in sorted((paths.reports_dir() / "sections").glob("*.qmd")):
        for key in re.findall(r"\{\{<\s*var\s+([^\s>]+)\s*>\}\}", chapter.read_text(encoding="utf-8")):
            node = values
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None or isinstance(node, dict) or node == "n/a":
                missing.append(f"{chapter.name}: {key}")
    assert not missing, missing


INTERVAL_AFTER = re.compile(r"^[^\d\[(]{0,40}?[\[(]?(?:95% CI\s*)?(\d+\.\d+)\s*(?:–|,)\s*(\d+\.\d+)")


def page_text(page: str) -> str:
    body = page.split("<body", 1)[-1]
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", body, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def intervals_after(text: str, value: str) -> list[str]:
    """Every interval printed right after an occurrence of ``value`` (prose "a–b" or a table's
    "[a, b]"), as "a–b"."""
    found = []
    for match in re.finditer(rf"(?<![\d.]){re.escape(value)}(?![\d])", text):
        after = INTERVAL_AFTER.match(text[match.end():match.end() + 80])
        if after:
            found.append(f"{after.group(1)}–{after.group(2)}")
    return found


def test_each_headline_number_carries_one_interval_wherever_the_page_shows_it(built):
    """The length rule's WAF, the share of decided pairs where the longer text and where MER-Caption+
    was preferred, the paper's best WAF and the best length-balanced accuracy: wherever the page
    prints one of them with an interval, it is that number's one interval. Two quantities that print
    the same value (e.g. the best judge's WAF and the MER-Caption+ share, both 449 of 563) may each
    carry their own."""
    page, _ = built
    text = page_text(page)
    values = yaml.safe_load((paths.project_root() / "_variables.yml").read_text(encoding="utf-8"))
    headline = {"length rule's WAF": values["judges"]["length"], "longer preferred": values["data"]["longer_preferred"],
                "MER-Caption+ preferred": values["data"]["mercaption_preferred"], "paper's best WAF": values["paper"]["best"],
                "best length-balanced accuracy": values["judges"]["balanced"]}
    known = [*headline.values(), values["judges"]["best"]]
    for name, q in headline.items():
        allowed = {f"{k['lo']}–{k['hi']}" for k in known if k["value"] == q["value"]}
        shown = intervals_after(text, q["value"])
        assert f"{q['lo']}–{q['hi']}" in shown, f"{name} ({q['value']}) never appears with its interval"
        stray = sorted(set(shown) - allowed)
        assert not stray, f"{name} = {q['value']} appears with other intervals too: {stray} (its own: {q['lo']}–{q['hi']})"
