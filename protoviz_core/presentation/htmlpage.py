"""Self-contained HTML pages: figures embedded as data URIs, tables, text, links.

The report and the comparison are single files that open anywhere (an MLflow
artifact view, a mail attachment): every PNG is inlined. Links to other files
(the atlas) are relative, and :meth:`HtmlPage.write` refuses to write a page that
links to a file that does not exist.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from protoviz_core.infra.atomic import atomic_write

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f4f4f4; } p.note { color: #555; }
"""


class HtmlPage:
    """A page built top to bottom: ``page.heading(...)``, ``page.image(path)``, ..., ``page.write(path)``."""

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        self._links: list[str] = []

    def heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str, note: bool = False) -> None:
        css = ' class="note"' if note else ""
        self._parts.append(f"<p{css}>{html.escape(text)}</p>")

    def image(self, png: str | Path | bytes, alt: str) -> None:
        """Inline a PNG: the file at ``png``, or its bytes."""
        raw = png if isinstance(png, bytes) else Path(png).read_bytes()
        data = base64.b64encode(raw).decode("ascii")
        self._parts.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')

    def table(self, frame: pd.DataFrame) -> None:
        self._parts.append(frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}"))

    def link(self, href: str, text: str) -> None:
        """A link relative to the page's folder (checked to exist when the page is written)."""
        self._links.append(href)
        self._parts.append(f'<p><a href="{html.escape(href)}">{html.escape(text)}</a></p>')

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        missing = [href for href in self._links if not (path.parent / href).exists()]
        if missing:
            raise FileNotFoundError(f"{path}: links to missing files {missing}")
        body = "\n".join(self._parts)
        document = (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n"
        )
        with atomic_write(path) as f:
            f.write(document)
        return path
