"""The rendered card in a real headless browser (Debian chromium): it loads offline, shows the funnel,
and every image loads.

The card page itself carries no script; the test opens a copy of it with a small inline
script appended that writes what it finds into the DOM, and reads it back with --dump-dom.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from schemas.card import write_card
from tests.unit.card_data import write_document_dataset

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var funnelImg = document.querySelector('img[src="funnel.png"]');
  var result = {
    title: document.title,
    images: imgs.length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.getAttribute("src"); }),
    funnelImageWidth: funnelImg ? funnelImg.naturalWidth : 0,
    funnelStages: Array.prototype.map.call(document.querySelectorAll("#funnel-table tbody tr td:first-child"),
                                           function (td) { return td.textContent; }),
    funnelVisible: !!(document.getElementById("funnel") && document.getElementById("funnel").offsetHeight > 0)
  };
  var out = document.createElement("pre");
  out.id = "raymill-check";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                "(installed by .ci/run; apt-get install chromium)")


def browser_check(page: Path, profile: Path) -> dict:
    out = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="raymill-check">(.*?)</pre>', out.stdout, re.S)
    assert match, f"chromium did not run the check (rc={out.returncode}): {out.stderr[-2000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def with_check(card_dir: Path, name: str, extra_html: str = "") -> Path:
    html = (card_dir / "card.html").read_text(encoding="utf-8")
    page = card_dir / name
    page.write_text(html.replace("</body>", extra_html + CHECK_SCRIPT + "</body>"), encoding="utf-8")
    return page


def test_card_html_loads_in_chromium_with_funnel_and_images(tmp_path):
    directory, stages = write_document_dataset(tmp_path / "ds", n=150)
    card_dir = write_card(directory, "document")
    served = tmp_path / "served"  # a copy elsewhere: relative image paths must travel with the folder
    shutil.copytree(card_dir, served)

    result = browser_check(with_check(served, "check.html"), tmp_path / "profile1")
    assert result["title"] == "raymill document dataset card"
    assert result["broken"] == []
    assert result["images"] == len(list(served.glob("*.png"))) >= 5
    assert result["funnelImageWidth"] > 0 and result["funnelVisible"]
    assert result["funnelStages"] == [s.stage for s in stages]

    # The check itself can fail: a missing image is reported as broken.
    control = browser_check(with_check(served, "control.html", '<img src="missing.png" alt="x">'), tmp_path / "profile2")
    assert control["broken"] == ["missing.png"]
