"""The screenshots of the README (docs/app_start.png, docs/app_result.png), taken with the same headless Chromium
as the browser test: ``python -m referdino.app.screenshots [OUT_DIR]`` (default: docs)."""

from __future__ import annotations

import sys
from pathlib import Path


def take(out_dir: str | Path = "docs", viewport: tuple[int, int] = (1280, 900)) -> list[Path]:
    from .browser import chromium, free_port
    from .page import AppConfig, build_app

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    app = build_app(AppConfig(model="demo", port=free_port(), device="cpu"))
    try:
        app.launch(block=False, quiet=True)
        with chromium(viewport) as (context, page, foreign):
            context.set_default_timeout(60_000)
            page.goto(app.url)
            page.wait_for_selector("#run")
            page.wait_for_timeout(500)
            start = out / "app_start.png"
            page.screenshot(path=str(start), full_page=True)
            page.click("#sample")
            page.locator("#video-in video").wait_for()
            page.click("#run")
            page.locator("#status").filter(has_text="Done").wait_for()
            video = page.locator("#overlay video")
            video.wait_for()
            video.evaluate("""async (v) => { v.pause(); v.currentTime = Math.min(1.0, v.duration / 2);
                await new Promise(r => v.readyState >= 2 ? setTimeout(r, 300) : v.addEventListener('seeked', r)); }""")
            page.locator("#sheet img").wait_for()
            page.wait_for_timeout(800)
            result = out / "app_result.png"
            page.screenshot(path=str(result), full_page=True)
            if foreign:
                raise RuntimeError(f"the page contacted other hosts: {foreign}")
        for path in (start, result):
            _shrink(path)
        return [start, result]
    finally:
        app.close()


def _shrink(path: Path) -> None:
    """256 colours, no dithering: a third of the size, the same picture for a page of flat colours."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


if __name__ == "__main__":
    for path in take(sys.argv[1] if len(sys.argv) > 1 else "docs"):
        print(path)
