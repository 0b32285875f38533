"""Tables for people and for pipes.

On a terminal a table is drawn with rich. Anywhere else (CI logs, ``| tee``, ``| grep``)
rich would squeeze it into 80 columns and fold every cell, so it is printed as plain
aligned rows instead: one line per row, columns as wide as their widest cell, nothing
cut. Machines that want the data ask for ``--output json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

# (column, cell) -> a rich style for the cell on a terminal, or None
Styler = Callable[[str, str], str | None]

_GAP = "  "


def print_table(
    console: Console,
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    caption: str | None = None,
    style: Styler | None = None,
    numeric: Sequence[bool] | None = None,
) -> None:
    """Print ``rows`` under ``headers``: rich on a terminal, plain aligned text otherwise."""
    cells = [[str(value) for value in row] for row in rows]
    right = list(numeric) if numeric is not None else [False] * len(headers)
    if console.is_terminal:
        console.print(_rich_table(title, headers, cells, caption, style, right))
    else:
        console.print(
            plain_table(title, headers, cells, caption, right),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def plain_table(
    title: str,
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    caption: str | None = None,
    right: Sequence[bool] | None = None,
) -> str:
    """The table as text lines, columns separated by two spaces; no cell is cut."""
    right = right or [False] * len(headers)
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(row: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        ]
        return _GAP.join(parts).rstrip()

    lines = [f"{title}:", line(headers), *(line(row) for row in cells)]
    if caption:
        lines.append(caption)
    return "\n".join(lines)


def _rich_table(
    title: str,
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    caption: str | None,
    style: Styler | None,
    right: Sequence[bool],
) -> Table:
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    last = len(headers) - 1
    for index, (header, numeric) in enumerate(zip(headers, right, strict=True)):
        # Every column but the last (often a long URL or reason) stays on one line.
        table.add_column(
            header, justify="right" if numeric else "left", no_wrap=index < last, overflow="fold"
        )
    for row in cells:
        table.add_row(
            *(
                Text(cell, style=(style(header, cell) if style else None) or "")
                for header, cell in zip(headers, row, strict=True)
            )
        )
    return table
