"""`referdino app` in a real browser: the page served on a free localhost port (demo model, in a thread of this
process), driven by Debian's headless Chromium through Playwright's sync API.

Checked: upload + two expressions -> the overlay video is served, has the clip's frame count and plays in the
browser, and the masks zip downloads with every frame's PNG for both expressions and their masks.json; bad inputs
(no expression, a file that is not a video) are messages on the page, never a traceback; a second user while a run
works is queued with a message, and the progress bar counts frames; neither the page nor the server contacts any
host but this machine (no analytics, no CDN).

Skipped only outside CI when Chromium, Playwright or Gradio is missing; with CI set it fails instead."""

import importlib.util
import io
import json
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
import zipfile

import av
import pytest

from referdino.app.browser import CHROMIUM, free_port
from referdino.inference.writers import expression_dirs

TIMEOUT_MS = 60_000
pytestmark = [  # pandas 3 and Gradio's in-memory event statistics (nothing is sent anywhere)
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def _missing() -> list[str]:
    missing = [] if os.path.exists(CHROMIUM) else [f"{CHROMIUM} (apt-get install chromium)"]
    for module, hint in (("playwright", "pip install playwright"), ("gradio", 'pip install -e ".[app]"')):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} ({hint})")
    return missing


@pytest.fixture(scope="module")
def browser_tools():
    missing = _missing()
    if missing:
        message = "the app's browser test needs " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + " - CI must install them (.ci/run)", pytrace=False)
        pytest.skip(message)


def _local(host) -> bool:
    host = host.decode() if isinstance(host, bytes) else str(host or "")
    return host in ("", "localhost", "::1", "0.0.0.0", "::") or host.startswith("127.")


@pytest.fixture(scope="module")
def foreign_connections():
    """Every connection or name lookup of this process to a host that is not this machine, while the module runs:
    recorded and refused (nothing leaves the machine)."""
    seen: list[str] = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            seen.append(f"connect {address}")
            raise OSError(f"test guard: no connection to {address[0]}")
        return connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            seen.append(f"lookup {host}")
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: no lookup of {host}")
        return getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded_connect)
        mp.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
        yield seen


@pytest.fixture(scope="module")
def app(browser_tools, foreign_connections):
    from referdino.app.page import AppConfig, build_app

    app = build_app(AppConfig(model="demo", port=free_port(), device="cpu"))
    app.launch(block=False, quiet=True)
    yield app
    root = app.workspace.root
    app.close()
    assert not root.exists(), "the app's temporary folder is left behind"


@pytest.fixture(scope="module")
def browser(app):
    from referdino.app.browser import chromium

    with chromium() as (context, page, foreign):
        context.set_default_timeout(TIMEOUT_MS)
        yield context, page, foreign
    assert not foreign, f"the page contacted other hosts: {foreign}"


def _open(page, app):
    page.goto(app.url)
    page.wait_for_selector("#run")
    assert "demo" in page.locator("#model-info").inner_text()


def _toast(page, text):
    toast = page.locator(".toast-body").filter(has_text=text)
    toast.first.wait_for()
    return toast.first.inner_text()


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - the app on 127.0.0.1
        return r.read()


def test_upload_two_expressions_overlay_plays_and_masks_zip(app, browser, tmp_path, foreign_connections):
    _, page, _ = browser
    start = time.perf_counter()
    _open(page, app)
    page.locator("#video-in input[type=file]").set_input_files(str(app.sample.path))
    page.locator("#video-in video").wait_for()  # uploaded and previewed
    exprs = app.sample.expressions[:2]
    page.fill("#expressions textarea", "\n".join(exprs))
    page.click("#run")
    page.locator("#status").filter(has_text="Done").wait_for(timeout=TIMEOUT_MS)
    assert f"{app.sample.num_frames} frames, 2 expressions" in page.locator("#status").inner_text()

    # the overlay video: served, the clip's frame count, and it plays in the browser
    video = page.locator("#overlay video")
    video.wait_for()
    src = video.get_attribute("src")
    assert src and src.startswith(app.url.rstrip("/"))
    if app.own_gradio_cache:  # the served copy is in the app's temporary folder, deleted when it stops
        assert urllib.parse.unquote(src.split("file=", 1)[1]).startswith(str(app.workspace.root))
    with av.open(io.BytesIO(_fetch(src))) as container:
        stream = container.streams.video[0]
        assert sum(1 for _ in container.decode(stream)) == app.sample.num_frames
    played = video.evaluate("""async (v) => {
        v.muted = true;
        try { await v.play(); } catch (e) { return {error: String(e)}; }
        const t0 = performance.now();
        while (v.currentTime === 0 && performance.now() - t0 < 5000) await new Promise(r => setTimeout(r, 50));
        return {time: v.currentTime, ready: v.readyState, error: v.error && v.error.code, width: v.videoWidth};
    }""")
    assert played.get("error") is None and played["time"] > 0 and played["width"] >= 480, played

    # the contact sheet is shown
    assert page.locator("#sheet img").get_attribute("src")

    # the masks zip downloads with every frame of both expressions
    with page.expect_download() as download:
        page.locator("#masks-zip a").first.click()
    path = tmp_path / "masks.zip"
    download.value.save_as(path)
    dirs = expression_dirs(exprs)
    frames = [f"{i:05d}" for i in range(app.sample.num_frames)]
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert names == {f"{d}/masks/{f}.png" for d in dirs for f in frames} | {f"{d}/masks.json" for d in dirs}
        for d, e in zip(dirs, exprs):
            data = json.loads(zf.read(f"{d}/masks.json"))
            assert data["expression"] == e and [r["frame"] for r in data["frames"]] == frames
    assert not foreign_connections, f"the server contacted other hosts: {foreign_connections}"
    assert time.perf_counter() - start < 60


def test_no_expression_is_a_message_on_the_page(app, browser):
    _, page, _ = browser
    _open(page, app)
    page.click("#sample")
    page.locator("#video-in video").wait_for()
    page.fill("#expressions textarea", "  \n ")
    page.click("#run")
    assert "Type at least one expression" in _toast(page, "at least one expression")
    assert "Traceback" not in page.content()
    assert "Done" not in page.locator("#status").inner_text()


def test_a_file_that_is_not_a_video_is_a_message(app, browser, tmp_path):
    _, page, _ = browser
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is a text file, not a video\n" * 50)
    _open(page, app)
    page.locator("#video-in input[type=file]").set_input_files(str(fake))
    page.fill("#expressions textarea", "the red square")
    page.wait_for_timeout(500)
    page.click("#run")
    assert "holiday.mp4 cannot be read as a video" in _toast(page, "cannot be read as a video")
    assert "Traceback" not in page.content()


def test_second_user_is_queued_and_progress_counts_frames(app, browser):
    """User A's run is held after its first frames (a gate in its progress); user B clicks meanwhile."""
    context, page_a, _ = browser
    gate, reached = threading.Event(), threading.Event()
    original = app.models.get

    def gated_get(name):
        segmenter = original(name)
        real_segment_to = segmenter.segment_to

        def segment_to(*args, progress=None, **kwargs):
            class Held:
                def update(self, n):
                    progress.update(n)
                    reached.set()
                    gate.wait(TIMEOUT_MS / 1000)

            try:
                return real_segment_to(*args, progress=Held(), **kwargs)
            finally:
                segmenter.segment_to = real_segment_to

        segmenter.segment_to = segment_to
        return segmenter

    app.models.get = gated_get
    page_b = context.new_page()
    try:
        for page in (page_a, page_b):
            _open(page, app)
            page.click("#sample")
            page.locator("#video-in video").wait_for()
        page_a.click("#run")
        assert reached.wait(TIMEOUT_MS / 1000)
        app.models.get = original  # B's run is not held
        # A's progress bar shows the frame count
        n = app.sample.num_frames
        page_a.locator("#overlay").filter(has_text=f"{n}/{n}").wait_for()
        assert "frames" in page_a.locator("#overlay").inner_text()
        page_b.click("#run")
        assert "queued" in _toast(page_b, "queued")
        page_b.locator("#status").filter(has_text="Queued").wait_for()
        gate.set()
        for page in (page_a, page_b):
            page.locator("#status").filter(has_text="Done").wait_for(timeout=TIMEOUT_MS)
    finally:
        gate.set()
        app.models.get = original
        page_b.close()
