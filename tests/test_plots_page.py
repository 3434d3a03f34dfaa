"""End to end: `dvc plots show` writes a page whose training curves draw offline.

The page of a built pipeline is opened from disk in headless Chromium (Debian `chromium`,
driven by Python `playwright`); every request off the machine is refused and recorded.
"""

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest

from helpers import clone_repo, pipeline_env, run_dvc

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
CURVES = ("loss", "reconstruction", "kl")
# dvc-render's first line colour (one per revision; train and val differ by their dash)
LINE_COLOUR = (0x94, 0x5D, 0xD6)

# Pixels close to the line colour in the plotting area (the left part: the legend is on the
# right and also shows the colour).
_COUNT_LINE_PIXELS = """([canvas, [r, g, b]]) => {
    const width = Math.floor(canvas.width * 0.7);
    const data = canvas.getContext('2d').getImageData(0, 0, width, canvas.height).data;
    let count = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] > 0 && Math.abs(data[i] - r) + Math.abs(data[i + 1] - g)
            + Math.abs(data[i + 2] - b) < 60) count++;
    }
    return count;
}"""


def _missing(what: str, package: str) -> None:
    message = f"{what} is missing: install the Debian/pip package `{package}` " \
              "(scripts/install_test_deps.sh does it as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Python playwright", "playwright")
    if not CHROMIUM.is_file():
        _missing(str(CHROMIUM), "chromium")
    return sync_playwright


def _is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("file", "data", "blob", "about") or parsed.hostname == "127.0.0.1"


def test_every_training_curve_draws_offline(built_repo, tmp_path, sync_playwright):
    repo = clone_repo(built_repo, tmp_path / "repo")
    run_dvc(repo, "plots", "show", env=pipeline_env(repo))  # the default output, as `make plots`
    page_file = repo / "dvc_plots" / "index.html"
    html = page_file.read_text()
    assert "cdn.jsdelivr.net" not in html and html.count("vegaEmbed(") == len(CURVES)

    requests, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", lambda route: route.continue_() if _is_local(route.request.url)
                       else route.abort())
            page.on("request", lambda request: requests.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_file.as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.vega-embed canvas').length === {len(CURVES)}",
                timeout=30_000)
            page.wait_for_timeout(500)  # vega draws on the next animation frames
            canvases = page.query_selector_all(".vega-embed canvas")
            counts = [page.evaluate(_COUNT_LINE_PIXELS, [c, LINE_COLOUR]) for c in canvases]
        finally:
            browser.close()

    assert not errors, errors
    assert [url for url in requests if not _is_local(url)] == []
    assert any(url.endswith("/plots_template/vendor/vega.min.js") for url in requests)
    assert len(counts) == len(CURVES) and min(counts) > 200, counts  # every curve drew
