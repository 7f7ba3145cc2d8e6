"""The HTML report of the tiny study opens in headless Chromium without errors.

Uses the session fixture ``tiny_study`` (tests/conftest.py: config/test.yaml run once, report
built). A probe script is added to a copy of ``results/report.html``; it records uncaught
errors, ``console.error`` calls and resources that fail to load, and decodes every image
embedded in the report (the figures are data URIs inside the report's data). Chromium
(Debian's ``chromium`` package; ``make test`` installs it) dumps the DOM with the probe's
findings; the test fails on any JavaScript error or image that does not load, and saves a
screenshot of the first screen to ``results/report_screenshot.png`` (and to the test's tmp
dir).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "results" / "report_screenshot.png"
WINDOW = "1400,1000"
DATA_URI = r'data:image/(?:png|jpeg|svg\+xml)[^,"\s]*;base64,[A-Za-z0-9+/=]+'

PROBE = """
<script>
window.__probe = {errors: [], consoleErrors: [], failedResources: [], images: 0, badImages: []};
window.addEventListener("error", function (event) {
  var target = event.target;
  if (target && target !== window && (target.src || target.href)) {
    window.__probe.failedResources.push(String(target.src || target.href).slice(0, 120));
  } else {
    window.__probe.errors.push(String(event.message));
  }
}, true);
window.addEventListener("unhandledrejection", function (event) {
  window.__probe.errors.push("unhandled rejection: " + String(event.reason));
});
(function () {
  var original = console.error;
  console.error = function () {
    window.__probe.consoleErrors.push(Array.prototype.map.call(arguments, String).join(" "));
    return original.apply(console, arguments);
  };
})();
window.addEventListener("load", function () {
  var html = document.documentElement.innerHTML;
  var pattern = /data:image\\/(png|jpeg|svg\\+xml)[^,"\\s]*;base64,[A-Za-z0-9+\\/=]+/g;
  var uris = html.match(pattern) || [];
  var seen = {};
  var pending = 0;
  function finish() {
    var imgs = document.querySelectorAll("img");
    for (var i = 0; i < imgs.length; i++) {
      if (!imgs[i].complete || imgs[i].naturalWidth === 0) {
        window.__probe.badImages.push("<img> " + String(imgs[i].src).slice(0, 80));
      }
    }
    var out = document.createElement("pre");
    out.id = "report-probe";
    out.textContent = JSON.stringify(window.__probe);
    document.body.appendChild(out);
  }
  uris.forEach(function (uri) {
    if (seen[uri]) { return; }
    seen[uri] = true;
    pending += 1;
    var img = new Image();
    img.onload = function () {
      window.__probe.images += 1;
      if (img.naturalWidth === 0) { window.__probe.badImages.push(uri.slice(0, 60)); }
      if (--pending === 0) { finish(); }
    };
    img.onerror = function () {
      window.__probe.badImages.push(uri.slice(0, 60));
      if (--pending === 0) { finish(); }
    };
    img.src = uri;
  });
  if (pending === 0) { setTimeout(finish, 500); }
});
</script>
"""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(
        "Chromium is not installed: `make test` installs Debian's package "
        "(apt-get install -y chromium, as root); install it to run this test"
    )


def run_chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [
        chromium_binary(),
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={WINDOW}",
        "--virtual-time-budget=15000",
        *args,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def open_in_chromium(html: str, tmp_path: Path) -> tuple[dict, str]:
    """Load ``html`` with the probe in headless Chromium; return the probe's record and DOM.

    The record gains ``uncaught``: the "Uncaught ..." lines Chromium logged to stderr.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    probed = tmp_path / "probed.html"
    head = html.lower().index("<head>") + len("<head>")
    probed.write_text(html[:head] + PROBE + html[head:], encoding="utf-8")
    proc = run_chromium("--dump-dom", probed.as_uri(), profile=tmp_path / "profile-dom")
    match = re.search(r'<pre id="report-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, "the probe did not finish: the page did not load\n" + proc.stderr[-3000:]
    probe = json.loads(
        match.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    probe["uncaught"] = [line for line in proc.stderr.splitlines() if "Uncaught" in line]
    return probe, proc.stdout


def assert_no_errors(probe: dict) -> None:
    assert not probe["uncaught"], f"JavaScript errors in the report: {probe['uncaught']}"
    assert not probe["errors"], f"JavaScript errors in the report: {probe['errors']}"
    assert not probe["consoleErrors"], f"console errors: {probe['consoleErrors']}"
    assert not probe["failedResources"], f"resources not loaded: {probe['failedResources']}"
    assert not probe["badImages"], f"images that do not load: {probe['badImages']}"


def test_the_probe_catches_script_errors_and_broken_images(tmp_path):
    """The checks themselves: a page with each kind of fault fails, a clean one passes."""
    good_png = (REPO / "results" / "benchmarks" / "product.png").read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(good_png).decode()
    clean = f"<html><head></head><body><img src='{uri}'><p>ok</p></body></html>"
    probe, dom = open_in_chromium(clean, tmp_path / "clean")
    assert_no_errors(probe)
    assert probe["images"] == 1 and "<p>ok</p>" in dom
    faults = {
        "uncaught": "<script>notDefinedAnywhere();</script>",
        "consoleErrors": "<script>console.error('render failed');</script>",
        "failedResources": "<img src='missing-figure.png'>",
        "badImages": "<script>var s = 'data:image/png;base64,AAAAAAAA';</script>",
    }
    for kind, snippet in faults.items():
        page = f"<html><head></head><body>{snippet}</body></html>"
        probe, _ = open_in_chromium(page, tmp_path / kind)
        assert probe[kind], f"the probe missed a fault of kind {kind!r}: {probe}"


def test_report_opens_without_errors_and_screenshot(tiny_study, tmp_path):
    report = tiny_study / "results" / "report.html"
    html = report.read_text(encoding="utf-8", errors="replace")
    # every figure and table of the tiny config is in the report
    for name in (
        "front_page.html",
        "provenance.html",
        "error_vs_params.png",
        "learning_curves.png",
        "product_speedup.png",
        "summary.csv",
    ):
        assert name in html, f"{name} missing from the report"
    for category in ("1 Front page", "2 Dataset – qm9-U0", "3 Model – MACE", "4 Kernels"):
        escaped = json.dumps(category)[1:-1]  # the report's data is JSON (\u2013 for –)
        assert category in html or escaped in html, f"report category {category!r} missing"

    probe, dom = open_in_chromium(html, tmp_path)
    assert_no_errors(probe)
    embedded = set(re.findall(DATA_URI, html))
    assert len(embedded) >= 4, f"only {len(embedded)} distinct images embedded in the report"
    assert probe["images"] == len(embedded), (
        f"{probe['images']} of {len(embedded)} embedded images decoded in the browser"
    )
    # the landing page shows the front-page table, and no caption failed to render
    assert "results at a glance" in dom and "MACE: fusion" in dom
    assert "System Message" not in html, "an rst caption or category name renders with errors"

    shot = tmp_path / "report_screenshot.png"
    run_chromium(f"--screenshot={shot}", report.as_uri(), profile=tmp_path / "profile-shot")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOT)
