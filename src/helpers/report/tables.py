"""How the report shows a table: one function every notebook calls, ``show``.

A table reaches the reader as the HTML a notebook cell displays; Quarto and the offline renderer
both embed that HTML as it is (neither reads Markdown inside it). So the table is made readable
here, once: no pandas index column (a meaningful index becomes ordinary columns), missing values
as "—" rather than NaN, floats to a fixed number of decimals, text left and numbers right,
pandoc's sub- and superscripts (``len~a~``, ``R^2^``) as ``<sub>``/``<sup>``, and long headers
allowed to break after underscores so a wide table fits the page.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

MISSING = "—"
SCRIPTS = ((re.compile(r"~([^~\s]+)~"), "sub"), (re.compile(r"\^([^^\s]+)\^"), "sup"))


def markup(text: object) -> str:
    """Text as HTML: escaped, with pandoc's ``~sub~`` and ``^sup^`` as tags."""
    out = html.escape(str(text))
    for pattern, tag in SCRIPTS:
        out = pattern.sub(rf"<{tag}>\1</{tag}>", out)
    return out


def _header(label: object) -> str:
    """A column header that may wrap after underscores (``two_class_waf_lo``)."""
    return markup(label).replace("_", "_<wbr>")


def _cell(value: object, digits: int) -> str:
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
    values = column.dropna()
    if pd.api.types.is_float_dtype(column) and len(values) and bool((values % 1 == 0).all()):
        return 0
    return digits if isinstance(digits, int) else 2


def show(table: pd.DataFrame | pd.Series, digits: int | dict[str, int] | None = None,
         mono: Sequence[str] = ()) -> Styler:
    """``table`` as the report displays it (return it as a cell's last expression).

    ``digits``: decimals of float columns, one number or ``{column: decimals}`` (default 2;
    0 for float columns of whole numbers unless named). ``mono``: columns set in monospace and broken
    anywhere (hashes, paths). A named index (``set_index('system')``, a pivot's rows) is shown
    as columns; an unnamed one is dropped."""
    frame = table.to_frame() if isinstance(table, pd.Series) else table
    keep = any(name is not None for name in frame.index.names)
    frame = frame.reset_index(drop=not keep)
    frame.columns = frame.columns.set_names([None] * frame.columns.nlevels)
    style = frame.style.hide(axis="index").format_index(_header, axis="columns")
    for position, column in enumerate(frame.columns):
        values = frame.iloc[:, position]
        decimals = _decimals(values, {} if digits is None else digits, column)
        style = style.format(lambda v, d=decimals: _cell(v, d), subset=[column])
        align = "right" if pd.api.types.is_numeric_dtype(values) else "left"
        style = style.set_table_styles({column: [{"selector": "", "props": [("text-align", align)]}]},
                                       overwrite=False)
    for column in (c for c in mono if c in frame.columns):
        style = style.set_properties(subset=[column], **{"font-family": "monospace", "word-break": "break-all"})
    return style.set_table_attributes('class="report-tbl"')
