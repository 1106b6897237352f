"""Prose lives in the chapters (reports/sections/*.qmd), numbers in Python: the modules that used to
build the report's sentences now compute values only, and the report says what the data is."""

from __future__ import annotations

import ast
import re

import pytest

from helpers import paths

ROOT = paths.project_root()
VALUE_MODULES = ("src/helpers/report/chapters.py", "src/helpers/stats/confound.py", "src/helpers/tournament/demo.py")
SENTENCE = re.compile(r"[A-Za-z][A-Za-z'’-]*(?:[\s,;:]+[A-Za-z][A-Za-z'’-]*){4,}")  # five words in a row


def sentence_fstrings(source: str) -> list[tuple[int, str]]:
    """f-strings whose literal text holds a run of five or more words (a sentence being built),
    except inside ``raise`` (an error message addresses the user, not the report's reader)."""
    tree = ast.parse(source)
    exempt = {id(n) for r in ast.walk(tree) if isinstance(r, ast.Raise) for n in ast.walk(r)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and id(node) not in exempt:
            text = " ".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if SENTENCE.search(text):
                found.append((node.lineno, text.strip()[:80]))
    return found


def test_the_detector_finds_a_sentence_built_in_an_fstring_and_spares_labels_and_errors():
    assert sentence_fstrings('x = f"Of the {n} judges run here, {name} scores best."')
    assert not sentence_fstrings('x = f"{judge} ({strategy})"\ny = f"ran: {rounds} rounds, {pairs} pairs"')
    assert not sentence_fstrings('raise ValueError(f"{path}: judges row {i} lacks the columns it needs here")')


@pytest.mark.parametrize("module", VALUE_MODULES)
def test_the_value_modules_build_no_sentences(module):
    found = sentence_fstrings((ROOT / module).read_text(encoding="utf-8"))
    assert not found, f"{module} builds sentences (move them to reports/sections/*.qmd): {found}"


def chapters_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "reports" / "sections").glob("*.qmd")))


def test_the_chapters_call_v1s_labels_unanimous_and_never_a_majority():
    text = chapters_text()
    assert "unanimous" in text
    for match in re.finditer(r"majority", text, flags=re.I):
        context = text[max(0, match.start() - 80):match.end() + 80]
        assert re.search(r"vote|voting|top-\*?k", context, flags=re.I), f"'majority' describes labels: {context!r}"


def test_every_claim_about_length_on_v1s_labels_names_the_writer_too():
    """Where a chapter says what v1's labels reward, it says length *or* the MER-Caption+ style."""
    text = " ".join(chapters_text().split())
    for claim in re.finditer(r"(measures|reward)s? (a preference for )?(length|longer)", text):
        around = text[claim.start():claim.end() + 160]
        assert "MER-Caption+" in around, f"a claim about length without the writer: {around!r}"
