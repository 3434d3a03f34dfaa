"""The command line, `python -m mnist_vae draw 7 --n 16 --out seven.png`: argv parsing only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_vae import drawing


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mnist_vae",
                                description="Ask the trained VAE to draw digits.")
    commands = p.add_subparsers(dest="command", required=True)
    d = commands.add_parser("draw", help="draw n images of one digit into a PNG grid")
    d.add_argument("digit", help="the digit to draw, 0-9")
    d.add_argument("--n", default="16",
                   help=f"how many images (1-{drawing.MAX_IMAGES}; default 16)")
    d.add_argument("--seed", default="0", help="the same seed draws the same images")
    d.add_argument("--scale", default="2", help="screen pixels per MNIST pixel (1-8)")
    d.add_argument("--out", default=None, help="PNG file to write (default: digit-<d>.png)")
    d.add_argument("--model", default=None,
                   help="a .keras file or a models:/ URI (default: the registry's champion "
                        "when there is a tracking store with one, else models/vae.keras)")
    w = commands.add_parser("web", help="serve the drawing page on 127.0.0.1")
    w.add_argument("--port", type=int, default=8000, help="0 picks a free port (default 8000)")
    w.add_argument("--model", default=None, help="as for draw")
    return p


def draw_command(args: argparse.Namespace) -> str:
    """Draw and write the PNG; returns the line to print."""
    request = drawing.check_request(args.digit, args.n, args.seed, args.scale)
    out = Path(args.out or f"digit-{request.digit}.png")
    if out.suffix.lower() != ".png":
        raise drawing.DrawError(f"--out {out}: the output is a PNG; name it *.png")
    if out.is_dir():
        raise drawing.DrawError(f"--out {out}: is a directory; give a file name")
    model, origin = drawing.open_model(args.model)
    png = drawing.png_bytes(drawing.draw(model, request), request.scale)
    from mnist_vae.files import atomic_path

    with atomic_path(out) as tmp:  # a failure leaves no partial file
        tmp.write_bytes(png)
    return f"draw: {request.n} x digit {request.digit} (seed {request.seed}) from {origin} -> {out}"


def web_command(args: argparse.Namespace) -> None:
    """Load the model once, then serve the page until interrupted."""
    from mnist_vae import webpage

    model, origin = drawing.open_model(args.model)
    webpage.serve(model, origin, port=args.port)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "web":
            web_command(args)
        else:
            print(draw_command(args))
    except (drawing.DrawError, FileNotFoundError, TypeError) as err:
        print(f"draw: error: {err}", file=sys.stderr)
        return 2
    return 0
