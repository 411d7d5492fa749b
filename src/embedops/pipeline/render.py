"""A report as one list of blocks, rendered as markdown and as self-contained HTML.

The HTML carries its CSS inline and its images as base64 data URIs, so it can be mailed, attached to a CI
run or opened offline; the markdown links the PNGs beside it instead. No markdown or template library is
used: a report is a handful of headings, tables and code blocks, and both renderers together are shorter
than the glue a library would need.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: Path  # relative to the report's directory
    alt: str


@dataclass(frozen=True)
class Code:
    text: str


# A plain string is a paragraph, or a list when every line starts with "- "; `code` and **bold** spans.
Block = str | Heading | Table | Image | Code


def _cell_md(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(map(_cell_md, block.header)) + " |", "|" + "---|" * len(block.header)]
            lines += ["| " + " | ".join(map(_cell_md, row)) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Image):
            parts.append(f"![{block.alt}]({block.path.as_posix()})")
        elif isinstance(block, Code):
            parts.append(f"```bash\n{block.text}\n```")
        else:
            parts.append(block)
    return "\n\n".join(parts) + "\n"


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1f2328}
h1{font-size:1.6rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}h2{font-size:1.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.8rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .7rem;text-align:left}
th{background:#f6f8fa}code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
pre{background:#f6f8fa;padding:.8rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
img{max-width:100%;border:1px solid #d0d7de}ul{padding-left:1.3rem}
"""


def _inline_html(text: str) -> str:
    """Escape, then turn `code` and **bold** spans (the only inline markup the blocks use) into tags."""
    out, code = [], False
    for index, part in enumerate(html.escape(text).split("`")):
        if index:
            code = not code
        if code:
            out.append(f"<code>{part}</code>")
        else:
            bold = part.split("**")
            out.append("".join(f"<strong>{s}</strong>" if i % 2 else s for i, s in enumerate(bold)))
    return "".join(out)


def _paragraph_html(text: str) -> str:
    lines = text.splitlines()
    if lines and all(line.startswith("- ") for line in lines):
        return "<ul>" + "".join(f"<li>{_inline_html(line[2:])}</li>" for line in lines) + "</ul>"
    return f"<p>{_inline_html(text)}</p>"


def to_html(blocks: list[Block], directory: Path, title: str) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline_html(cell)}</th>" for cell in block.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode((directory / block.path).read_bytes()).decode("ascii")
            parts.append(f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}">')
        elif isinstance(block, Code):
            parts.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
        else:
            parts.append(_paragraph_html(block))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
