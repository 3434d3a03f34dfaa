"""The drawing page's server: the page, the two JSON endpoints, and its bounds."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from mnist_vae import webpage
from mnist_vae.model import load_vae
from test_cli import save_drawing_vae


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The page's server on a free 127.0.0.1 port, in a thread, with a tiny drawing model."""
    path = tmp_path_factory.mktemp("web") / "vae.keras"
    save_drawing_vae(path)
    model = load_vae(path)
    server = webpage.DrawingServer(("127.0.0.1", 0), model, str(path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", model
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _pngs(body: bytes) -> list[Image.Image]:
    urls = json.loads(body)["images"]
    assert all(u.startswith("data:image/png;base64,") for u in urls)
    return [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))) for u in urls]


def test_the_page_has_the_controls(page):
    status, body = _get(page[0] + "/")
    html = body.decode()
    assert status == 200 and "Draw me a digit" in html
    assert 'id="n"' in html and 'id="walk"' in html and 'max="64"' in html


def test_draw_answers_the_models_drawings_as_pngs(page):
    url, model = page
    status, body = _get(url + "/api/draw?digit=7&n=5&seed=2")
    assert status == 200
    images = _pngs(body)
    assert len(images) == 5
    assert all(i.format == "PNG" and i.size == (84, 84) and i.mode == "L" for i in images)
    expected = np.asarray(model.sample(5, 2, digit=7))[..., 0]
    shown = np.stack([np.asarray(i)[::3, ::3] for i in images]) / 255.0
    np.testing.assert_allclose(shown, expected, atol=1 / 255 + 1e-6)


def test_a_walk_starts_and_ends_at_drawn_digits(page):
    url, model = page
    status, body = _get(url + "/api/walk?start=3&end=8&steps=4&seed=1")
    assert status == 200
    images = _pngs(body)
    expected = np.asarray(model.digit_walk(3, 8, 4, 1))[..., 0]
    np.testing.assert_allclose(np.asarray(images[-1])[::3, ::3] / 255.0, expected[-1],
                               atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("query, status, message", [
    ("/api/draw?digit=10", 400, "digit must be 0-9, got 10"),
    ("/api/draw?digit=x", 400, "digit must be a whole number"),
    ("/api/draw", 400, "digit must be a whole number 0-9, got None"),
    ("/api/draw?digit=3&n=65", 400, "n must be 1-64 images, got 65"),
    ("/api/draw?digit=3&n=999", 400, "n must be 1-64 images, got 999"),
    ("/api/walk?start=3&end=8&steps=1", 400, "steps must be 2-64, got 1"),
    ("/api/walk?start=3&end=11", 400, "digit must be 0-9, got 11"),
    ("/api/draw?digit=3&pad=" + "x" * 300, 400, "request too large"),
    ("/nothing", 404, "no page /nothing"),
])
def test_bad_requests_get_a_message_and_the_page_keeps_drawing(page, query, status, message):
    got, body = _get(page[0] + query)
    assert got == status and message in json.loads(body)["error"]
    assert _get(page[0] + "/api/draw?digit=1&n=1")[0] == 200


def test_only_get_is_served(page):
    status, body = _get(page[0] + "/api/draw?digit=1", data=b"{}")
    assert status == 405 and json.loads(body)["error"] == "only GET"
