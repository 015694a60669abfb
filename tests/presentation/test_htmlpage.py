import base64
import io

import pandas as pd
import pytest
from PIL import Image

from protoviz_core.presentation.htmlpage import HtmlPage


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_page_inlines_images_escapes_text_and_checks_links(tmp_path):
    page = HtmlPage("run <b>clrjit</b>")
    page.heading("Probe & diversity")
    page.text("seed <1>", note=True)
    page.image(_png(), "a red pixel")
    page.table(pd.DataFrame({"epoch": [0, 1], "logreg": [0.123456, 0.5]}))
    (tmp_path / "atlas").mkdir()
    (tmp_path / "atlas/index.html").write_text("")
    page.link("atlas/index.html", "atlas")
    html = page.write(tmp_path / "index.html").read_text()
    assert "run &lt;b&gt;clrjit&lt;/b&gt;" in html and "<b>" not in html and "Probe &amp; diversity" in html
    assert f'src="data:image/png;base64,{base64.b64encode(_png()).decode()}"' in html
    assert "0.1235" in html and 'href="atlas/index.html"' in html


def test_a_link_to_a_missing_file_refuses_to_write(tmp_path):
    page = HtmlPage("x")
    page.link("atlas/index.html", "atlas")
    with pytest.raises(FileNotFoundError, match="atlas/index.html"):
        page.write(tmp_path / "index.html")
    assert not (tmp_path / "index.html").exists()
