"""Seen in a real browser: headless Chromium (Debian's, driven by Playwright) on the drawing
page and on the MLflow UI over a store the CI-overlay pipeline filled.

Needs Debian's `chromium` (apt-get install chromium) and the `playwright` package (pip install
playwright; never `playwright install`): skipped without them, failed under CI=true.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import unused_port
from mlflow_helpers import VENV_BIN, subprocess_env

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SCALE = 3  # webpage.SCALE: each MNIST pixel is 3 x 3 screen pixels


def _missing_browser() -> str | None:
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM}: apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no Python playwright: pip install playwright (not `playwright install`)"
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium; skipped when absent, failed under CI (which installs it)."""
    missing = _missing_browser()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the browser: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


def _start(args: list, log: Path, env: dict, cwd: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([str(a) for a in args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


# --- the drawing page ------------------------------------------------------------------------

def _decoded(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def test_a_person_picks_a_digit_and_sees_the_champion_draw_it(built_repo, browser, tmp_path):
    from mnist_vae.classifier import load_classifier

    port, log = unused_port(), tmp_path / "web.log"
    proc = _start([VENV_BIN / "python", "-m", "mnist_vae", "web", "--port", port], log,
                  subprocess_env(), built_repo)  # no --model: the registry's champion
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_ready(url, proc, log)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        assert page.locator("#origin").inner_text() == "models:/mnist-vae@champion"
        page.fill("#n", "12")
        page.click("#digits button[data-digit='3']")
        page.wait_for_function("document.querySelectorAll('#drawings img').length === 12")
        page.wait_for_function("[...document.querySelectorAll('#drawings img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        sources = page.eval_on_selector_all("#drawings img", "imgs => imgs.map(i => i.src)")
        sizes = page.eval_on_selector_all(
            "#drawings img", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
        page.screenshot(path=tmp_path / "page.png")
        page.click("#walk")
        page.wait_for_function("document.querySelectorAll('#walked img').length === 10")
        assert page.locator("#error").inner_text() == ""
        page.fill("#n", "999")
        page.click("#draw")
        page.wait_for_function("document.querySelector('#error').textContent.length > 0")
        assert "n must be 1-64 images, got 999" in page.locator("#error").inner_text()
    finally:
        _stop(proc)
    images = [_decoded(s) for s in sources]
    assert all(i.format == "PNG" and i.size == (28 * SCALE, 28 * SCALE) for i in images)
    assert sizes == [[28 * SCALE, 28 * SCALE]] * 12  # as the browser decoded them
    pixels = np.stack([np.asarray(i)[::SCALE, ::SCALE] for i in images]) / 255.0
    classifier = load_classifier(built_repo / "models" / "classifier.keras")
    read = np.argmax(classifier.predict(pixels[..., None].astype("float32"), verbose=0), axis=1)
    print(f"the classifier reads the page's twelve 3s as {read.tolist()}")
    metrics = json.loads((built_repo / "metrics" / "eval.json").read_text())
    expected = metrics["digits"]["per_digit"]["3"]["agreement"]  # the pipeline's own number
    assert np.mean(read == 3) >= min(0.75, expected - 0.25), (read.tolist(), expected)


# --- the MLflow UI -------------------------------------------------------------------------------

def _rest(base: str, endpoint: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{endpoint}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def _dismiss_overlays(page) -> None:
    """The MLflow UI's first-visit assistant panel and promo modal hide what is under them."""
    for name in ("Close", "Dismiss", "Got it", "Maybe later", "No thanks"):
        for button in page.get_by_role("button", name=name, exact=True).all():
            try:
                if button.is_visible():
                    button.click(timeout=2_000)
            except Exception:  # noqa: BLE001 (an overlay that closed itself meanwhile)
                pass
    page.keyboard.press("Escape")


def test_the_mlflow_ui_shows_the_run_its_pictures_and_the_champion(built_repo, browser, tmp_path):
    store = tmp_path / "mlflow.db"
    shutil.copyfile(built_repo / "mlflow.db", store)  # the UI may migrate it: leave the repo's
    port, log = unused_port(), tmp_path / "ui.log"
    proc = _start([VENV_BIN / "mlflow", "ui", "--workers", "1", "--backend-store-uri",
                   f"sqlite:///{store}", "--default-artifact-root", built_repo / "mlartifacts",
                   "--host", "127.0.0.1", "--port", port], log,
                  subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/health", proc, log)
        experiment = _rest(base, "experiments/get-by-name?experiment_name=mnist-vae")
        experiment_id = experiment["experiment"]["experiment_id"]
        run_id = json.loads((built_repo / "models" / "mlflow_run.json").read_text())["run_id"]
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)

        page.goto(f"{base}/#/experiments/{experiment_id}/runs/{run_id}")
        page.wait_for_selector("text=train.epochs")
        _dismiss_overlays(page)
        text = page.inner_text("body")
        assert "train.epochs" in text and "model.latent_dim" in text  # params
        assert "val_loss" in text and "digits/agreement" in text  # metrics
        page.screenshot(path=tmp_path / "run.png", full_page=True)

        page.goto(f"{base}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics")
        page.wait_for_selector("text=val_loss")
        _dismiss_overlays(page)
        assert page.locator("canvas, svg.main-svg").count() > 0  # per-epoch charts drawn
        page.screenshot(path=tmp_path / "metrics.png", full_page=True)

        page.goto(f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts")
        _dismiss_overlays(page)
        page.get_by_text("plots", exact=True).first.click()
        page.get_by_text("digits.png", exact=True).first.click()
        preview = page.locator("img[src*='digits.png']").first
        preview.wait_for()
        page.wait_for_function("(i) => i.complete && i.naturalWidth > 0",
                               arg=preview.element_handle())
        assert preview.evaluate("i => i.naturalWidth") > 500  # the 10-row grid, decoded
        page.screenshot(path=tmp_path / "artifacts.png", full_page=True)

        page.goto(f"{base}/#/models/mnist-vae")
        page.wait_for_selector("text=champion")
        _dismiss_overlays(page)
        text = page.inner_text("body")
        assert "mnist-vae" in text and "champion" in text and "Version 1" in text
        page.screenshot(path=tmp_path / "registry.png", full_page=True)
    finally:
        _stop(proc)
