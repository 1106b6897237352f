"""How the report shows a table: one function every notebook calls, ``show``.

A table reaches the reader as the HTML a notebook cell displays; Quarto and the offline renderer
both embed that HTML as it is (neither reads Markdown inside it). So the table is made readable
here, once: no pandas index column (a meaningful index becomes ordinary columns), missing values
as "—" rather than NaN, floats to a fixed number of decimals, text left and numbers right,
pandoc's sub- and superscripts (``len~a~``, ``R^2^``) as ``<sub>``/``<sup>``, and column names in
words (``names.column``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from helpers.report import names

MISSING = "—"
SCRIPTS = ((re.compile(r"~([^~\s]+)~"), "sub"), (re.compile(r"\^([^^\s]+)\^"), "sup"))


def markup(text: object) -> str:
    """Text as HTML: escaped, with pandoc's ``~sub~`` and ``^sup^`` as tags."""
    out = html.escape(str(text))
    for pattern, tag in SCRIPTS:
        out = pattern.sub(rf"<{tag}>\1</{tag}>", out)
    return out


def _header(label: object) -> str:
    """A column header in words (``helpers.report.names``: ``two_class_waf`` is "2-class WAF",
    an unknown snake_case name gets spaces), so no code name reaches a reader."""
    return markup(names.column(label))


def _cell(value: object, digits: int) -> str:
    if isinstance(value, tuple):  # (value, lo, hi) from with_intervals
        bounds = "" if any(pd.isna(b) for b in value[1:]) else \
            f'<br><span class="ci">[{_cell(value[1], digits)}, {_cell(value[2], digits)}]</span>'
        return _cell(value[0], digits) + bounds
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return MISSING
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return markup(value)


def _decimals(column: pd.Series, digits: int | dict, key: object) -> int:
    """Decimals for a column: as asked for it by name, else 0 for floats that are all whole
    numbers (counts that became floats because some are missing), else ``digits`` (default 2)."""
    if isinstance(digits, dict) and (key in digits or str(key) in digits):
        return digits[key] if key in digits else digits[str(key)]
    values = column.map(lambda v: v[0] if isinstance(v, tuple) else v).dropna()
    if pd.api.types.is_float_dtype(values) and len(values) and bool((values % 1 == 0).all()):
        return 0
    return digits if isinstance(digits, int) else 2


def _numeric(column: pd.Series) -> bool:
    """Numbers, or text that reads as numbers ("79.75 ± 0.00", "[76.11, 83.07]"): set right-aligned,
    as a paper's tables set them."""
    if pd.api.types.is_numeric_dtype(column) or all(isinstance(v, tuple) for v in column):
        return True
    text = column.dropna().astype(str)
    return bool(len(text)) and bool(text.str.match(r"^(?:[-+−]?[\d.]|\[|—$)").all())


def _short_numbers(column: pd.Series, width: int = 18) -> bool:
    """Text that reads as one short number ("79.75 ± 0.00", "[76.11, 83.07]"): kept on one line,
    since a mean broken from its spread, or a bound from its interval, misreads in a narrow column."""
    if pd.api.types.is_numeric_dtype(column) or any(isinstance(v, tuple) for v in column):
        return False
    text = column.dropna().astype(str)
    return _numeric(column) and bool(len(text)) and int(text.str.len().max()) <= width


def _bounds(columns: list, i: int) -> bool:
    """Whether columns i+1, i+2 are the lower and upper bound of column i (``x, x_lo, x_hi``,
    ``acc, ci_low, ci_high``, ``estimate, lo, hi``)."""
    if i + 2 >= len(columns) or not all(isinstance(c, str) for c in columns[i:i + 3]):
        return False
    value, low, high = columns[i:i + 3]
    for lo, hi in (("lo", "hi"), ("low", "high")):
        prefix = low[: -len(lo)]
        if low.endswith(lo) and high == prefix + hi:  # x_lo, x_hi bound x or x_acc, never x_std
            return prefix in ("", "ci_") or value in (prefix.rstrip("_"), prefix + "acc", prefix + "mean")
    return False


def with_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Each value followed by its lower and upper bound as one column of (value, lo, hi), shown
    as the value over its interval, so a table of estimates with CIs needs a third of the columns."""
    columns, out, i = list(frame.columns), {}, 0
    while i < len(columns):
        if _bounds(columns, i) and pd.api.types.is_numeric_dtype(frame[columns[i]]):
            out[columns[i]] = list(zip(*(frame[c] for c in columns[i:i + 3]), strict=True))
            i += 3
        else:
            out[columns[i]], i = frame[columns[i]], i + 1
    return pd.DataFrame(out, index=frame.index)


def show(table: pd.DataFrame | pd.Series, digits: int | dict[str, int] | None = None,
         mono: Sequence[str] = (), intervals: bool = False) -> Styler:
    """``table`` as the report displays it (return it as a cell's last expression).

    ``digits``: decimals of float columns, one number or ``{column: decimals}`` (default 2;
    0 for float columns of whole numbers unless named). ``mono``: columns set in monospace and broken
    anywhere (hashes, paths). ``intervals``: each value followed by its bounds (``x, x_lo, x_hi``)
    shown as one column, the value over "[lo, hi]", for wide tables of estimates. A named index
    (``set_index('system')``, a pivot's rows) is shown as columns; an unnamed one is dropped."""
    frame = table.to_frame() if isinstance(table, pd.Series) else table
    frame = with_intervals(frame) if intervals else frame
    keep = any(name is not None for name in frame.index.names)
    frame = frame.reset_index(drop=not keep)
    frame.columns = frame.columns.set_names([None] * frame.columns.nlevels)
    style = frame.style.hide(axis="index").format_index(_header, axis="columns")
    for position, column in enumerate(frame.columns):
        values = frame.iloc[:, position]
        decimals = _decimals(values, {} if digits is None else digits, column)
        style = style.format(lambda v, d=decimals: _cell(v, d), subset=[column])
        styles = [{"selector": "", "props": [("text-align", "right" if _numeric(values) else "left")]}]
        if pd.api.types.is_numeric_dtype(values) or _short_numbers(values):
            # a number is never broken ("v [lo, hi]" may be); its header still wraps
            styles.append({"selector": "td", "props": [("white-space", "nowrap")]})
        style = style.set_table_styles({column: styles}, overwrite=False)
    for column in (c for c in mono if c in frame.columns):
        style = style.set_properties(subset=[column], **{"font-family": "monospace", "word-break": "break-all"})
    style = style.set_table_styles([{"selector": ".ci", "props": [("font-size", "0.85em"), ("opacity", "0.75")]}],
                                   overwrite=False)
    return style.set_table_attributes('class="report-tbl"')
