"""The pieces a report is made of, and the two pages they render to.

A report is a list of blocks (headings, paragraphs, facts, tables, figures); each block
renders itself to HTML and to Markdown, so the two files always say the same thing. The HTML
page has no external reference at all: its CSS and JS (``assets/report.css``,
``assets/report.js``) are inlined and plots are base64 PNGs, so the file can be mailed or
opened offline.
"""

from __future__ import annotations

import base64
import functools
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rewardtune.report.formatting import esc, md, md_text, slug
from rewardtune.runs.rundir import write_atomic


@dataclass
class Heading:
    text: str
    level: int = 2

    def html(self) -> str:
        anchor = f' id="{slug(self.text)}"' if self.level == 2 else ""
        return f"<h{self.level}{anchor}>{esc(self.text)}</h{self.level}>"

    def markdown(self) -> str:
        return f"{'#' * self.level} {md(self.text)}"


@dataclass
class Para:
    text: str
    note: bool = False  # a callout: something is missing

    def html(self) -> str:
        cls = ' class="note"' if self.note else ""
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(self.text))
        return f"<p{cls}>{text}</p>"

    def markdown(self) -> str:
        return f"> {md(self.text)}" if self.note else md(self.text)


@dataclass
class Facts:
    pairs: list[tuple[str, str]]

    def html(self) -> str:
        items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in self.pairs)
        return f'<dl class="facts">{items}</dl>'

    def markdown(self) -> str:
        return "\n".join(f"- **{md(k)}:** {md(v)}" for k, v in self.pairs)


@dataclass
class Cell:
    text: str
    cls: str = ""
    sort: float | None = None  # numeric sort key for the JS; NaN/None sort last
    sub: str = ""  # a secondary line (e.g. the metric's key)

    def html(self, numeric: bool = False) -> str:
        cls = " ".join(c for c in (self.cls, "num" if numeric else "") if c)
        attrs = f' class="{cls}"' if cls else ""
        if self.sort is not None:
            value = repr(float(self.sort)) if math.isfinite(self.sort) else ""
            attrs += f' data-value="{value}"'
        sub = f"<small>{esc(self.sub)}</small>" if self.sub else ""
        return f"<td{attrs}>{esc(self.text)}{sub}</td>"

    def markdown(self) -> str:
        if self.cls == "text":  # a prompt or a response: text nobody here wrote
            return md_text(self.text)
        return md(f"{self.text} (`{self.sub}`)" if self.sub else self.text)


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    table_id: str = ""
    row_class: str = ""
    numeric: set[int] = field(default_factory=set)  # column indices that sort numerically
    sorted_desc: int | None = None  # the column the rows arrive sorted by, largest first
    searchable: bool = False
    compact: bool = False  # as wide as its content, not the page

    def html(self) -> str:
        return self._search_box() + f'<div class="scroll">{self._table()}</div>'

    def _table(self) -> str:
        table_id = f' id="{self.table_id}"' if self.table_id else ""
        row_cls = f' class="{self.row_class}"' if self.row_class else ""
        body = "".join(f"<tr{row_cls}>{self._cells(row)}</tr>" for row in self.rows)
        head = f"<thead><tr>{self._header()}</tr></thead>"
        cls = "sortable compact" if self.compact else "sortable"
        return f'<table{table_id} class="{cls}">{head}<tbody>{body}</tbody></table>'

    def _cells(self, row: list[Cell]) -> str:
        return "".join(cell.html(numeric=i in self.numeric) for i, cell in enumerate(row))

    def _header(self) -> str:
        cells = []
        for i, name in enumerate(self.columns):
            cls = ' class="num"' if i in self.numeric else ""
            sort = ' aria-sort="descending"' if i == self.sorted_desc else ""
            cells.append(f'<th{cls}{sort} title="click to sort">{esc(name)}</th>')
        return "".join(cells)

    def _search_box(self) -> str:
        if not self.searchable:
            return ""
        n = len(self.rows)
        return (
            f'<div class="search"><input type="search" class="filter" data-table="{self.table_id}"'
            f' placeholder="Filter rows by any text" aria-label="Filter rows">'
            f'<span id="{self.table_id}-count">{n} of {n} rows</span></div>'
        )

    def markdown(self) -> str:
        lines = [
            "| " + " | ".join(md(c) for c in self.columns) + " |",
            "|"
            + "|".join("---:" if i in self.numeric else "---" for i in range(len(self.columns)))
            + "|",
        ]
        lines += ["| " + " | ".join(c.markdown() for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Plot:
    png: bytes
    alt: str

    def html(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{esc(self.alt)}">'
            f"<figcaption>{esc(self.alt)}</figcaption></figure>"
        )

    def markdown(self) -> str:
        return f"*Plot omitted in Markdown ({md(self.alt)}); see report.html.*"


Block = Heading | Para | Facts | Table | Plot


# --- pages ---------------------------------------------------------------------------


@functools.cache
def asset(name: str) -> str:
    """The text of ``report/assets/<name>`` (package data)."""
    return (resources.files("rewardtune.report") / "assets" / name).read_text(encoding="utf-8")


def _sections_html(blocks: list[Block]) -> str:
    """Each level-2 heading opens a card that holds the blocks up to the next one."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading) and block.level == 2:
            parts.append("</section>" if parts else "")
            parts.append("<section>")
        parts.append(block.html())
    return "\n".join(parts) + "\n</section>"


def _nav_html(blocks: list[Block]) -> str:
    links = [
        f'<a href="#{slug(b.text)}">{esc(b.text)}</a>'
        for b in blocks
        if isinstance(b, Heading) and b.level == 2
    ]
    return f"<nav>{''.join(links)}</nav>"


def render_html(title: str, subtitle: str, blocks: list[Block]) -> str:
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title><style>\n{asset('report.css')}</style></head>",
            f"<body><main><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>",
            _nav_html(blocks),
            _sections_html(blocks),
            f"</main><script>\n{asset('report.js')}</script></body></html>",
        ]
    )


def render_markdown(title: str, subtitle: str, blocks: list[Block]) -> str:
    parts = [f"# {md(title)}", md(subtitle), *(block.markdown() for block in blocks)]
    return "\n\n".join(parts) + "\n"


def write_pages(
    html_path: Path, md_path: Path, title: str, subtitle: str, blocks: list[Block]
) -> tuple[Path, Path]:
    """Write the blocks as the HTML page and its Markdown twin; returns the two paths."""
    write_atomic(html_path, render_html(title, subtitle, blocks))
    write_atomic(md_path, render_markdown(title, subtitle, blocks))
    return html_path, md_path
