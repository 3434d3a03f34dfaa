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
import re
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


@pytest.fixture(scope="module")
def drawing_model(downloaded_repo, tmp_path_factory):
    """A VAE that draws legible digits and a classifier that reads them, trained on 8,000 real
    training images in about a minute (the CI overlay's two epochs on 2,000 draw blurs)."""
    from mnist_vae import training
    from mnist_vae.classifier import train_classifier
    from mnist_vae.config import ClassifierConfig, DataConfig, ModelConfig, PriorConfig, TrainConfig
    from mnist_vae.data import load_splits

    root = tmp_path_factory.mktemp("drawing-model")
    splits = load_splits(downloaded_repo / "data" / "mnist.npz",
                         DataConfig(train_limit=8000, val_size=1000, test_limit=1000))
    model_cfg = ModelConfig(latent_dim=16, prior=PriorConfig(components=10,
                                                             components_per_digit=3))
    result = training.train(splits, DataConfig(), model_cfg,
                            TrainConfig(epochs=6, patience=6, progress_samples=4),
                            root / "checkpoints", verbose=0)
    training.save_model(result.model, root / "vae.keras")
    classifier, _ = train_classifier(splits.x_train, splits.y_train, ClassifierConfig(epochs=2),
                                     verbose=0)
    drawn = np.asarray(result.model.sample(200, 0, digit=3))
    agreement = np.mean(np.argmax(classifier.predict(drawn, verbose=0), axis=1) == 3)
    print(f"drawing model: best val loss {result.facts['best_val_loss']:.1f} nats; "
          f"the classifier reads {agreement:.0%} of 200 drawn 3s as 3")
    return root / "vae.keras", classifier


def _page_drawings(browser, url: str, digit: int, n: int, shot: Path) -> list[str]:
    """Pick `digit` and `n` on the page as a person would; the image sources it shows."""
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.fill("#n", str(n))
    page.click(f"#digits button[data-digit='{digit}']")
    page.wait_for_function(f"document.querySelectorAll('#drawings img').length === {n}")
    page.wait_for_function("[...document.querySelectorAll('#drawings img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    sizes = page.eval_on_selector_all(
        "#drawings img", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[28 * SCALE, 28 * SCALE]] * n  # as the browser decoded them
    page.screenshot(path=shot)
    sources = page.eval_on_selector_all("#drawings img", "imgs => imgs.map(i => i.src)")
    page.click("#walk")
    page.wait_for_function("document.querySelectorAll('#walked img').length === 10")
    assert page.locator("#error").inner_text() == ""
    page.fill("#n", "999")
    page.click("#draw")
    page.wait_for_function("document.querySelector('#error').textContent.length > 0")
    assert "n must be 1-64 images, got 999" in page.locator("#error").inner_text()
    page.close()
    return sources


def _pixels(sources: list[str]) -> np.ndarray:
    images = [_decoded(s) for s in sources]
    assert all(i.format == "PNG" and i.size == (28 * SCALE, 28 * SCALE) for i in images)
    return np.stack([np.asarray(i)[::SCALE, ::SCALE] for i in images]) / 255.0


def test_a_person_picks_a_digit_and_the_classifier_reads_it(browser, drawing_model, tmp_path):
    model_file, classifier = drawing_model
    port, log = unused_port(), tmp_path / "web.log"
    proc = _start([VENV_BIN / "python", "-m", "mnist_vae", "web", "--port", port, "--model",
                   model_file], log, subprocess_env(), tmp_path)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/", proc, log)
        pixels = _pixels(_page_drawings(browser, f"http://127.0.0.1:{port}/", 3, 12,
                                        tmp_path / "page.png"))
    finally:
        _stop(proc)
    read = np.argmax(classifier.predict(pixels[..., None].astype("float32"), verbose=0), axis=1)
    print(f"the classifier reads the page's twelve 3s as {read.tolist()}")
    assert np.mean(read == 3) >= 0.75, read.tolist()


def test_the_page_draws_with_the_registry_champion_by_default(browser, built_repo, tmp_path):
    from mnist_vae import registry

    port, log = unused_port(), tmp_path / "web.log"
    proc = _start([VENV_BIN / "python", "-m", "mnist_vae", "web", "--port", port], log,
                  subprocess_env(), built_repo)  # no --model, in the repository with a store
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_ready(url, proc, log)
        page = browser.new_page()
        page.goto(url)
        assert page.locator("#origin").inner_text() == "models:/mnist-vae@champion"
        page.close()
        pixels = _pixels(_page_drawings(browser, url, 5, 4, tmp_path / "page.png"))
    finally:
        _stop(proc)
    champion = registry.load("champion", tracking_uri=f"sqlite:///{built_repo / 'mlflow.db'}")
    expected = np.asarray(champion.sample(4, 0, digit=5))[..., 0]
    np.testing.assert_allclose(pixels, expected, atol=1 / 255 + 1e-6)


# --- the MLflow UI -------------------------------------------------------------------------------

def _rest(base: str, endpoint: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{endpoint}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


# The MLflow UI opens its assistant panel on a first visit, over the page: start closed.
CLOSED_ASSISTANT = """
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""


def test_the_mlflow_ui_shows_the_run_its_pictures_and_the_champion(browser, built_repo, tmp_path):
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
        run_page = (f"{base}/#/experiments/{experiment['experiment']['experiment_id']}/runs/"
                    + json.loads((built_repo / "models" / "mlflow_run.json").read_text())[
                        "run_id"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        page.add_init_script(CLOSED_ASSISTANT)

        page.goto(run_page)
        page.wait_for_selector("text=train.epochs")
        text = page.inner_text("body")
        assert "model.prior.conditional" in text and "evaluate.digit_samples" in text  # params
        assert "digits/agreement" in text and "test/bernoulli/neg_elbo" in text  # metrics
        page.screenshot(path=tmp_path / "run.png", full_page=True)

        page.goto(run_page + "/model-metrics")  # one chart per metric, by step
        page.fill("input[placeholder='Search metric charts']", "val_loss")
        page.get_by_text("(val_loss)").first.wait_for()  # the chart's legend
        assert "Step" in page.inner_text("body")  # plotted against the epoch
        page.screenshot(path=tmp_path / "metrics.png", full_page=True)

        page.goto(run_page + "/artifacts")
        page.get_by_text("plots", exact=True).first.click()
        page.get_by_text("digits.png", exact=True).first.click()
        preview = page.locator("img[src^='blob:']").first
        preview.wait_for()
        page.wait_for_function("(i) => i.complete && i.naturalWidth > 0",
                               arg=preview.element_handle())
        with Image.open(built_repo / "plots" / "digits.png") as png:
            assert preview.evaluate("i => [i.naturalWidth, i.naturalHeight]") == list(png.size)
        page.screenshot(path=tmp_path / "artifacts.png", full_page=True)

        page.goto(f"{base}/#/models/mnist-vae")
        page.wait_for_selector("text=Version 1")
        page.keyboard.press("Escape")  # a registry promo, if it shows
        row = page.locator("tr, [role=row]").filter(has_text="Version 1").first
        row.get_by_text(re.compile(r"^@\s*champion$")).wait_for()  # version 1's alias tag
        assert "mnist-vae" in page.inner_text("body")
        page.screenshot(path=tmp_path / "registry.png", full_page=True)
    finally:
        _stop(proc)
