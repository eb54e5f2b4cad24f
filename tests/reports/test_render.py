"""The renderings against checked-in golden files, and the page in a real browser.

Golden files: tests/golden/reports/<case>/ holds report.md, report.html (each
embedded PNG replaced by a placeholder, since the PNG bytes follow the installed
matplotlib and fonts) and csv/. After an intended change, regenerate them and review the diff:

    DEEPGAP_UPDATE_GOLDEN=1 PYTHONPATH=$PWD python -m pytest -q tests/reports/test_render.py -k golden

The browser test needs Debian's chromium (`make install-test` installs it as root with
apt-get); without it the test is skipped and says so.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.compare import main

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_REPORTS = Path(__file__).resolve().parents[1] / "golden" / "reports"
STUDIES = "tests/golden/studies"
CASES = {
    "four-systems": [f"{STUDIES}/t4", f"{STUDIES}/l4", f"{STUDIES}/l4x4", f"{STUDIES}/cpu", "--baseline", "T4x1_torch"],
    "one-system": [f"{STUDIES}/h100-resnet50"],
}
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As Debian's chromium runs headless on a machine without network or display.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _render(case: str, out: Path, monkeypatch) -> Path:
    monkeypatch.chdir(ROOT)  # study paths as given on the command line, the same on every machine
    assert main([*CASES[case], "--output", str(out)]) == 0
    return out


def _golden_text(report: Path) -> dict[str, str]:
    files = {"report.md": (report / "report.md").read_text(),
             "report.html": DATA_URI.sub("data:image/png;base64,PNG", (report / "report.html").read_text())}
    files.update({f"csv/{p.name}": p.read_text() for p in sorted((report / "csv").glob("*.csv"))})
    return files


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_report(case, tmp_path, monkeypatch):
    rendered = _golden_text(_render(case, tmp_path / case, monkeypatch))
    golden = GOLDEN_REPORTS / case
    if os.environ.get("DEEPGAP_UPDATE_GOLDEN"):
        shutil.rmtree(golden, ignore_errors=True)
        for name, text in rendered.items():
            (golden / name).parent.mkdir(parents=True, exist_ok=True)
            (golden / name).write_text(text)
    expected = {str(p.relative_to(golden)): p.read_text() for p in sorted(golden.rglob("*")) if p.is_file()}
    assert sorted(rendered) == sorted(expected)
    for name, text in rendered.items():
        assert text == expected[name], f"{case}/{name} differs from its golden file (see this module's docstring)"


PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
    embedded: images.every(i => i.src.startsWith("data:image/png;base64,")),
    order: [...document.body.children].map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")),
    height: document.documentElement.scrollHeight,
  });
  document.body.appendChild(probe);
});
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make install-test installs it "
                    "as root with apt-get)")
def test_page_loads_in_headless_chromium_with_every_image_and_the_summary_first(tmp_path, monkeypatch):
    report = _render("four-systems", tmp_path / "r", monkeypatch)
    page = report / "report.html"
    probe = tmp_path / "probe.html"  # the report and a script that reports what the browser saw
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=90)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"chromium exit {done.returncode}, no probe in the page it dumped: {done.stderr[-2000:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["images"] == len(list(report.glob("*.png"))) and seen["broken"] == [] and seen["embedded"]
    assert seen["order"][:3] == ["h1", "section#summary", "nav#contents"]
    assert seen["order"][3:-2] and all(e.startswith("section#") for e in seen["order"][3:-2])
