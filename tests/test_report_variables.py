"""The numbers the prose quotes (helpers.report.variables): Quarto's ``{{< var key >}}`` shortcode,
resolved by the offline renderer from the same ``_variables.yml`` that Quarto reads, and the
values computed from the tables with the report's one tie rule."""

from __future__ import annotations

import textwrap

import pandas as pd
import yaml

from helpers import report
from helpers.report import variables
from helpers.reported import HumanAgreement, PaperResults


def test_a_var_shortcode_is_replaced_inline_and_a_nested_key_is_read_with_dots():
    values = {"judges": {"length": {"value": "79.57"}}, "pairs": 574}
    warnings: list[str] = []
    text = "WAF {{< var judges.length.value >}} on {{<var pairs>}} pairs."
    assert variables.resolve(text, values, warnings) == "WAF 79.57 on 574 pairs." and warnings == []


def test_an_unknown_key_shows_as_quarto_shows_it_and_is_a_warning():
    warnings: list[str] = []
    assert variables.resolve("x {{< var nope.key >}}", {"nope": {}}, warnings) == "x ?var:nope.key"
    assert warnings and "nope.key" in warnings[0]
    assert variables.lookup({"a": {"b": 1}}, "a") is None  # a group is not a value


def test_shortcodes_inside_fenced_code_are_left_as_written():
    text = "```\n{{< var a >}}\n```\n{{< var a >}}"
    assert variables.resolve(text, {"a": "1"}, []) == "```\n{{< var a >}}\n```\n1"


def test_the_file_lives_beside_quarto_yml_as_quarto_requires(tmp_path):
    (tmp_path / "_quarto.yml").write_text("project: {type: default}\n")
    (tmp_path / "reports").mkdir()
    assert variables.variables_path(tmp_path / "reports" / "index.qmd") == tmp_path / "_variables.yml"


def test_the_offline_renderer_resolves_the_same_file(tmp_path):
    (tmp_path / "_quarto.yml").write_text("project: {type: default}\n")
    variables.write({"data": {"pairs": 574}}, tmp_path / "_variables.yml")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "index.qmd").write_text(textwrap.dedent("""\
        ---
        title: t
        ---

        ## Abstract

        We read {{< var data.pairs >}} pairs.
    """))
    page = report.render(reports / "index.qmd")
    assert "We read 574 pairs." in page.html and page.warnings == []
    assert yaml.safe_load((tmp_path / "_variables.yml").read_text()) == {"data": {"pairs": 574}}


def test_headline_values_come_from_the_tables_formatted_as_the_tables_show_them(tmp_path):
    pd.DataFrame({"label": ["a1", "a2", "same"], "pairs": [275, 288, 11], "percent": [0, 0, 0]}).to_csv(
        tmp_path / "data_labels.csv", index=False)
    pd.DataFrame({"quantity": ["longer description preferred"], "percent": [79.573712], "ci_low": [76.198934],
                  "ci_high": [82.948490], "pairs": [563]}).to_csv(tmp_path / "data_confound.csv", index=False)
    pd.DataFrame({"judge": ["length", "source"], "strategy": ["-", "-"], "two_class_waf": [79.5737, 79.75],
                  "two_class_waf_lo": [76.1, 76.5], "two_class_waf_hi": [82.9, 83.0],
                  "len_balanced_acc": [50.0, 50.0]}).to_csv(tmp_path / "metrics.csv", index=False)
    values = variables.headline(tmp_path, PaperResults(human=HumanAgreement(69.31, 59.23)))
    assert values["data"] == {"pairs": 574, "same": 11, "decided": 563,
                              "longer_preferred": {"value": "79.57", "lo": "76.20", "hi": "82.95", "pairs": 563}}
    assert values["judges"]["length"] == {"value": "79.57", "lo": "76.10", "hi": "82.90", "balanced": "50.00"}
    assert values["judges"]["best"]["name"] == "Writer rule" and values["paper"]["human"] == {"two_class": "69.31", "with_ties": "59.23"}


def test_p_values_read_as_a_paper_prints_them():
    from helpers.report import names

    assert names.p_value(5.4e-7) == "< 0.001" and names.p_value(0.00641) == "0.006"
    assert names.p_text(5.4e-7) == "p < 0.001" and names.p_text(0.0064) == "p = 0.006"
    assert names.p_value(float("nan")) == "—"
