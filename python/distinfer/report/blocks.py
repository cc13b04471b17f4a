"""The report as a list of blocks (headings, paragraphs, tables, figures), written out twice:
`to_markdown` for report.md here, `html.to_html` for report.html. The table rows are built once
(render.py) and both formats print the same cells. A table is a list of `Column`s, each its header
beside how its value is got from a row and printed, so a header never drifts from its cells; `table`
makes the block.

Text may use the little Markdown the report needs inline: `**strong**`, `*emphasis*`, `` `code` ``,
and `<br>` inside a table cell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Image:
    """A chart; `path` is the PNG file, `relative` how report.md links it."""

    path: Path
    relative: str
    alt: str


@dataclass(frozen=True)
class Table:
    columns: Sequence[str]
    rows: list[list[str | Image]]
    # Shown instead of the table when it has no rows.
    empty: str = ""


def cell(value: Any, places: int = 1) -> str:
    """A figure as the tables print it: thousands separated, `places` digits after the point, None
    as -."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{places}f}"
    return str(value)


def digits(places: int) -> Callable[[Any], str]:
    """`cell` with `places` digits after the point, as a column's format."""
    return lambda value: cell(value, places)


@dataclass(frozen=True)
class Column(Generic[R]):
    """One column of a table: its header, how to get its value from a row, how to print that value."""

    header: str
    get: Callable[[R], Any]
    format: Callable[[Any], str | Image] = cell


@dataclass(frozen=True)
class Named(Generic[R]):
    """A row of figures that do not carry the name of what they belong to (a scenario, a search)."""

    name: str
    of: R


def table(columns: Sequence[Column[R]], rows: Iterable[R], empty: str = "") -> Table:
    """The table of `rows`, one cell per column."""
    return Table(
        [c.header for c in columns], [[c.format(c.get(row)) for c in columns] for row in rows], empty
    )


@dataclass(frozen=True)
class Figures:
    images: list[Image] = field(default_factory=list)


Block = Heading | Paragraph | Bullets | Table | Figures


def image(path: Path, out: Path) -> Image:
    return Image(path=path, relative=path.relative_to(out).as_posix(), alt=path.stem)


def _md_cell(cell: str | Image) -> str:
    if isinstance(cell, Image):
        return f"![{cell.alt}]({cell.relative})"
    return cell.replace("|", "/")


def md_table(columns: Sequence[str], rows: list[list[str | Image]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]


def to_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            lines.append(block.text)
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items]
        elif isinstance(block, Table):
            lines += md_table(block.columns, block.rows) if block.rows else [block.empty]
        else:
            lines += [_md_cell(img) for img in block.images]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
