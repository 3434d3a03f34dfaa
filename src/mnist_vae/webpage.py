"""The drawing page (`make draw`): a person picks a digit and a count and sees the model draw.

A standard-library HTTP server on 127.0.0.1 with one page and two JSON endpoints:
`/api/draw?digit=7&n=16&seed=0` and `/api/walk?start=3&end=8&steps=10&seed=0`, each answering
`{"images": ["data:image/png;base64,...", ...]}` (one PNG per image, 28 x scale pixels square)
or `{"error": "..."}` with HTTP 400. Bounded: GET only, short query strings, at most
`MAX_WEB_IMAGES` images per request, one drawing at a time, a socket timeout per connection.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mnist_vae import drawing

MAX_WEB_IMAGES = 64
MAX_QUERY = 256  # characters of a query string
SOCKET_TIMEOUT_S = 10
SCALE = 3

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Draw me a digit</title>
<style>
 body { font-family: system-ui, sans-serif; background: #222; color: #eee; margin: 2em; }
 button, select, input { font-size: 1.1em; margin: .2em; }
 #digits button.on { background: #8cf; }
 .row { display: flex; flex-wrap: wrap; gap: 4px; margin: 1em 0; }
 .row img { image-rendering: pixelated; background: #000; }
 #error { color: #f88; }
</style></head>
<body>
<h1>Draw me a digit</h1>
<p>The VAE draws the digit you pick (from <code id="origin">ORIGIN</code>).</p>
<div id="digits"></div>
<label>How many <input id="n" type="number" min="1" max="MAX" value="16"></label>
<label>Seed <input id="seed" type="number" min="0" value="0"></label>
<button id="draw">Draw</button> <button id="again">New drawings</button>
<div id="drawings" class="row"></div>
<h2>A walk from one digit to another</h2>
<label>From <select id="start"></select></label> <label>to <select id="end"></select></label>
<label>Steps <input id="steps" type="number" min="2" max="MAX" value="10"></label>
<button id="walk">Walk</button>
<div id="walked" class="row"></div>
<p id="error" role="alert"></p>
<script>
const $ = (id) => document.getElementById(id);
let digit = 7;
for (let d = 0; d < 10; d++) {
  const b = document.createElement("button");
  b.textContent = d; b.dataset.digit = d; b.className = d === digit ? "on" : "";
  b.onclick = () => { digit = d; for (const o of $("digits").children) o.className = "";
                      b.className = "on"; draw(); };
  $("digits").appendChild(b);
  $("start").add(new Option(d, d, false, d === 3));
  $("end").add(new Option(d, d, false, d === 8));
}
async function show(url, target) {
  $("error").textContent = "";
  target.setAttribute("aria-busy", "true");
  try {
    const reply = await fetch(url);
    const body = await reply.json();
    if (!reply.ok) throw new Error(body.error || reply.statusText);
    target.replaceChildren(...body.images.map((src, i) => {
      const img = new Image(); img.src = src; img.alt = "drawing " + i; return img; }));
  } catch (err) { $("error").textContent = err.message; }
  target.removeAttribute("aria-busy");
}
function draw() {
  const q = new URLSearchParams({digit, n: $("n").value, seed: $("seed").value});
  show("/api/draw?" + q, $("drawings"));
}
$("draw").onclick = draw;
$("again").onclick = () => { $("seed").value = Number($("seed").value) + 1; draw(); };
$("walk").onclick = () => show("/api/walk?" + new URLSearchParams({
  start: $("start").value, end: $("end").value, steps: $("steps").value,
  seed: $("seed").value}), $("walked"));
</script>
</body></html>
"""


class DrawingServer(ThreadingHTTPServer):
    """Holds the model; requests draw one at a time (the model is CPU-bound, not re-entrant)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: Any, origin: str):
        super().__init__(address, DrawingHandler)
        self.model, self.origin = model, origin
        self.lock = threading.Lock()


class DrawingHandler(BaseHTTPRequestHandler):
    server: DrawingServer
    timeout = SOCKET_TIMEOUT_S

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if len(url.query) > MAX_QUERY or int(self.headers.get("Content-Length") or 0):
            return self._json(400, {"error": "request too large"})
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        routes = {"/": self._page, "/api/draw": self._draw, "/api/walk": self._walk}
        if url.path not in routes:
            return self._json(404, {"error": f"no page {url.path}"})
        try:
            routes[url.path](query)
        except drawing.DrawError as err:
            self._json(400, {"error": str(err)})

    def do_POST(self) -> None:  # noqa: N802
        self._json(405, {"error": "only GET"})

    def _page(self, query: dict[str, str]) -> None:
        html = PAGE.replace("ORIGIN", self.server.origin).replace("MAX", str(MAX_WEB_IMAGES))
        self._send(200, "text/html; charset=utf-8", html.encode())

    def _draw(self, query: dict[str, str]) -> None:
        n = drawing.whole_number(query.get("n", "16"), "n")
        if not 1 <= n <= MAX_WEB_IMAGES:  # the page's bound, tighter than the library's
            raise drawing.DrawError(f"n must be 1-{MAX_WEB_IMAGES} images, got {n}")
        request = drawing.check_request(query.get("digit"), n, query.get("seed", "0"))
        with self.server.lock:
            images = drawing.draw(self.server.model, request)
        self._images(images)

    def _walk(self, query: dict[str, str]) -> None:
        steps = drawing.whole_number(query.get("steps", "10"), "steps")
        seed = drawing.check_request(0, seed=query.get("seed", "0")).seed
        if not 2 <= steps <= MAX_WEB_IMAGES:
            raise drawing.DrawError(f"steps must be 2-{MAX_WEB_IMAGES}, got {steps}")
        with self.server.lock:
            images = drawing.walk(self.server.model, query.get("start"), query.get("end"),
                                  steps, seed)
        self._images(images)

    def _images(self, images) -> None:
        urls = ["data:image/png;base64," + base64.b64encode(
            drawing.tile_png(image[..., 0], SCALE)).decode() for image in images]
        self._json(200, {"images": urls})

    def _json(self, status: int, body: dict) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: the page asks often


def serve(model: Any, origin: str, port: int = 8000, host: str = "127.0.0.1") -> None:
    """Serve the page until interrupted; `port` 0 picks a free one (printed)."""
    with DrawingServer((host, port), model, origin) as server:
        print(f"draw: http://{host}:{server.server_address[1]}/ (model {origin}); "
              f"Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
            server.serve_forever()
