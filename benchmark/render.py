"""A table frame as text: GitHub Markdown, CSV, LaTeX (booktabs) or HTML.

Numbers stay numeric in the frames; only ``render`` formats them, and a column ``X std`` prints as
``X ± std`` (except in CSV, which keeps it a column). A table's ``attrs["notes"]`` print under it.
"""

from __future__ import annotations

import html
import numbers
from typing import Any

import pandas as pd

from ..core.registry import unknown_name_message
from ..tasks.spaces import UnknownNameError
from .groups import STD, _is_missing

__all__ = ["FORMATS", "render"]

FORMATS = ("md", "csv", "latex", "html")
SIGNAL = "Search signal (ΔH %)"  # the mean entropy drop of the runs' op distributions, % of log K


def _cell(value: Any, column: str) -> str:
    if _is_missing(value) or value is pd.NA:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return str(value)
    if column == "Δ":
        return f"{value:+.2f}"
    if column == SIGNAL:
        return f"{value:.1f}"
    if column.startswith("Search cost"):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"  # 3150, not 3.15e+03
    return f"{value:.2f}"


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for every cell; each ``X std`` column folded into ``X`` as ``mean ± std``."""
    out = {}
    for column in table.columns:
        if column.endswith(STD) and column[: -len(STD)] in table.columns:
            continue
        cells = [_cell(v, column) for v in table[column]]
        if column + STD in table.columns:
            stds = [_cell(s, column) for s in table[column + STD]]
            cells = [c if s == "-" or c == "-" else f"{c} ± {s}" for c, s in zip(cells, stds, strict=True)]
        out[column] = cells
    return pd.DataFrame(out, columns=list(out))


def _numeric(table: pd.DataFrame) -> list[bool]:
    display_columns = [c for c in table.columns if not (c.endswith(STD) and c[: -len(STD)] in table.columns)]
    return [pd.api.types.is_numeric_dtype(table[c]) for c in display_columns]


def _markdown(cells: pd.DataFrame, numeric: list[bool]) -> str:
    def line(values):
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    rule = "| " + " | ".join("--:" if n else ":--" for n in numeric) + " |"
    return "\n".join([line(cells.columns), rule, *(line(row) for row in cells.itertuples(index=False))]) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _latex(cells: pd.DataFrame, numeric: list[bool]) -> str:
    def line(values):
        return " & ".join(_latex_escape(v) for v in values) + r" \\"

    spec = "".join("r" if n else "l" for n in numeric)
    body = [line(row) for row in cells.itertuples(index=False)]
    rows = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", line(cells.columns), r"\midrule", *body, r"\bottomrule"]
    return "\n".join([*rows, r"\end{tabular}"]) + "\n"


def _html(cells: pd.DataFrame, numeric: list[bool]) -> str:
    def row(values, tag):
        return "<tr>" + "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in values) + "</tr>"

    body = [row(r, "td") for r in cells.itertuples(index=False)]
    parts = ["<table>", "<thead>", row(cells.columns, "th"), "</thead>", "<tbody>", *body, "</tbody>", "</table>"]
    return "\n".join(parts) + "\n"


def render(table: pd.DataFrame, fmt: str = "md") -> str:
    """A table from ``comparison_table`` or ``ablation_table`` as text.

    The table's notes (``attrs["notes"]``: seeds recorded twice) follow it, except in ``csv``, which stays
    one parseable table (the command line prints them on stderr).

    Args:
        table: the frame to print.
        fmt: ``md`` (GitHub Markdown), ``csv`` (numbers to 6 significant digits, std in its own column),
            ``latex`` (booktabs ``tabular``) or ``html`` (a plain ``<table>``).
    """
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.6g")  # 6 digits: no float noise like 0.00999999
    writers = {"md": _markdown, "latex": _latex, "html": _html}
    if fmt not in writers:
        raise UnknownNameError(unknown_name_message("table format", fmt, list(FORMATS)))
    return writers[fmt](_display(table), _numeric(table)) + _notes(table.attrs.get("notes", []), fmt)


_NOTES = {
    "md": lambda n: f"\nNote: {n}\n",
    "csv": lambda n: f"# Note: {n}\n",
    "latex": lambda n: f"% Note: {_latex_escape(n)}\n",
    "html": lambda n: f'<p class="note">Note: {html.escape(n)}</p>\n',
}


def _notes(notes: list[str], fmt: str) -> str:
    return "".join(_NOTES[fmt](note) for note in notes)


_TITLES = {
    "md": lambda t: f"### {t}\n\n",
    "csv": lambda t: f"# {t}\n",
    "latex": lambda t: f"% {_latex_escape(t)}\n",
    "html": lambda t: f"<h3>{html.escape(t)}</h3>\n",
}
