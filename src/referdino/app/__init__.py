"""`referdino app`: a local web page (Gradio) over `referdino.inference.segmenter.Segmenter`.

Install the optional extra first: ``pip install "referdino[app]"``. This module imports without Gradio; the
page itself is in `page.py` (`build_app`, `serve`), what it does in `core.py`.
"""

from __future__ import annotations

import argparse
import sys

from .core import DEFAULT_MAX_FRAMES, DEFAULT_MAX_MB

INSTALL_HINT = 'the web app needs Gradio: pip install "referdino[app]"'


def add_app_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="NAME",
                   help="model selected when the page opens (`referdino models`; another can be picked on the "
                        "page); default: the default published model when it is cached, else demo (the embedded, "
                        "offline model)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the "
                        "network, with no login)")
    p.add_argument("--max-mb", type=float, default=DEFAULT_MAX_MB,
                   help=f"upload size cap in MB (default {DEFAULT_MAX_MB})")
    p.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                   help=f"video length cap in frames (default {DEFAULT_MAX_FRAMES})")
    p.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    from ..precision import CHOICES, DTYPE_HELP

    p.add_argument("--dtype", default="auto", choices=CHOICES, help=DTYPE_HELP)


def gradio_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("gradio") is not None


def run_app(args: argparse.Namespace) -> int:
    if args.max_mb <= 0 or args.max_frames < 1:
        raise ValueError("--max-mb and --max-frames must be positive")
    if not gradio_available():
        print(f"referdino app: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from .page import AppConfig, serve

    from .browser import free_port

    config = AppConfig(model=args.model, host=args.host, port=args.port or free_port(args.host), max_mb=args.max_mb,
                       max_frames=args.max_frames, device=args.device, dtype=args.dtype)
    return serve(config)
