"""report.html: the report's blocks as one self-contained page.

Charts are embedded as `data:image/png;base64` URIs and the style is inline, so the file opens
anywhere with no network and no files beside it; no script runs in it.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from distinfer.report.blocks import Block, Bullets, Heading, Image, Paragraph, Table

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em;
       color: #1d2733; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #d7dde4; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #d7dde4; padding: .3em .55em; text-align: right; vertical-align: top; }
th { background: #eef2f6; text-align: center; }
td:first-child, td:last-child { text-align: left; }
tbody tr:nth-child(even) { background: #f8fafb; }
figure { margin: 1em 0; } figcaption { color: #5b6875; font-size: 12px; }
img { max-width: 100%; height: auto; }
table.figures td { text-align: center; width: 50%; } table.figures img { max-width: 680px; }
code { background: #eef2f6; padding: 0 .25em; border-radius: 3px; }
"""

_STRONG = re.compile(r"\*\*(.+?)\*\*")
_EMPHASIS = re.compile(r"\*(.+?)\*")
_CODE = re.compile(r"`([^`]+)`")


def inline(text: str) -> str:
    """Escaped text with the report's inline Markdown (**, *, `, <br>) turned into tags."""
    out = html.escape(text, quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _STRONG.sub(r"<strong>\1</strong>", out)
    out = _EMPHASIS.sub(r"<em>\1</em>", out)
    return out.replace("&lt;br&gt;", "<br>")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _img(image: Image) -> str:
    alt = html.escape(image.alt)
    return f'<img src="{data_uri(image.path)}" alt="{alt}" title="{alt}">'


def _cell(cell: str | Image, tag: str = "td") -> str:
    return f"<{tag}>{_img(cell) if isinstance(cell, Image) else inline(cell)}</{tag}>"


def _table(block: Table) -> str:
    if not block.rows:
        return f"<p>{inline(block.empty)}</p>"
    figures = any(isinstance(cell, Image) for row in block.rows for cell in row)
    head = "".join(_cell(column, "th") for column in block.columns)
    body = "\n".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in block.rows)
    css = ' class="figures"' if figures else ""
    return f"<table{css}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{inline(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{inline(' '.join(block.text.splitlines()))}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _table(block)
    return "\n".join(
        f"<figure>{_img(img)}<figcaption>{html.escape(img.alt)}</figcaption></figure>" for img in block.images
    )


def to_html(title: str, blocks: list[Block]) -> str:
    body = "\n".join(_block(block) for block in blocks)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # An empty icon: the browser asks for no favicon (nothing outside this file is fetched).
        f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
