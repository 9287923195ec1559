"""The Gradio page of `referdino app` (needs the optional extra: ``pip install "referdino[app]"``).

Inputs: a video (upload, or the sample clip made at start-up), expressions one per line, the model, multi-object
on/off, the short side, and "Refine with SAM2" with its SAM2.1 size (README "Refining with SAM2"; a SAM2
checkpoint that is not cached offline is a message on the page). Outputs: the combined overlay video, the contact sheet and a zip of the masks.

A click runs two events: `check` (at once, any number in parallel) validates the inputs and says whether the
run will wait, then `run` (one at a time: Gradio's queue, concurrency 1) loads the model once per name and
segments with a progress bar fed by the frame count. Every user error is a `gr.Error` on the page.

Nothing is fetched from the internet: analytics and the version check are off (`GRADIO_ANALYTICS_ENABLED=False`,
``analytics_enabled=False``), no share link, the default theme's fonts are served by the app itself, no
server-side rendering (Node) and no MCP server. The only network use left is the one the user asks for: picking
a published model that is not cached downloads it from the Hugging Face Hub (set HF_HUB_OFFLINE=1 to refuse).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from .core import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_MB,
    MB,
    SHORT_SIDES,
    AppError,
    Limits,
    ModelCache,
    Sample,
    Workspace,
    check_request,
    default_model,
    describe_model,
    make_sample,
    model_choices,
    run_request,
    sam2_choices,
    sample_expressions,
)

from ..refine.sam2 import DEFAULT_SAM2

logger = logging.getLogger("referdino.app")

TITLE = "ReferDINO: referring video object segmentation"


def _quiet_gradio_env() -> None:
    """Before gradio is imported: no analytics, no version check, no hub telemetry."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass
class AppConfig:
    model: str | None = None  #: None: the default published model if cached, else `demo`
    host: str = "127.0.0.1"
    port: int | None = 7860
    max_mb: float = DEFAULT_MAX_MB
    max_frames: int = DEFAULT_MAX_FRAMES
    device: str = "auto"
    dtype: str = "auto"
    keep_runs: int = 8


@dataclass
class App:
    """A built page and what it owns; `close()` stops the server and deletes every temporary file."""

    blocks: Any
    config: AppConfig
    model: str
    models: ModelCache
    workspace: Workspace
    sample: Sample
    url: str | None = None
    own_gradio_cache: bool = False  #: GRADIO_TEMP_DIR was set to a folder of the workspace (unset on close)
    _closed: bool = field(default=False, repr=False)

    def launch(self, *, block: bool = True, quiet: bool = False) -> str:
        import gradio as gr

        _, url, _ = self.blocks.launch(
            server_name=self.config.host, server_port=self.config.port, share=False, inbrowser=False,
            prevent_thread_lock=not block, quiet=quiet, show_error=False,
            max_file_size=int(self.config.max_mb * MB),
            allowed_paths=[str(self.workspace.root)], ssr_mode=False, mcp_server=False, pwa=False,
            enable_monitoring=False, theme=gr.themes.Default(), footer_links=["settings"],
        )
        self.url = url
        return url

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.blocks.close()
        finally:
            self.workspace.close()
            if self.own_gradio_cache:
                os.environ.pop("GRADIO_TEMP_DIR", None)


def _fallback_note(requested: str | None, start_model: str) -> str:
    from ..zoo import DEFAULT_MODEL, DEMO

    if requested is None and start_model == DEMO:
        return (f" The default published model, {DEFAULT_MODEL}, is not cached on this machine, so the page starts "
                "on the embedded model; choose it in the list to download it (once).")
    return ""


def build_app(config: AppConfig | None = None) -> App:
    """Build the page (and the sample clip, and load the starting model once so that a bad --model fails now)."""
    _quiet_gradio_env()
    import gradio as gr

    config = config or AppConfig()
    limits = Limits(config.max_mb, config.max_frames)
    workspace = Workspace(keep_runs=config.keep_runs)
    own_gradio_cache = not os.environ.get("GRADIO_TEMP_DIR")
    if own_gradio_cache:  # uploads and served copies in our folder too: all of it goes when the server stops
        os.environ["GRADIO_TEMP_DIR"] = str(workspace.root / "gradio")
    try:
        sample = make_sample(workspace.root)
        models = ModelCache(config.device, config.dtype)
        start_model = default_model(config.model)
        with models.lock(start_model):
            models.get(start_model)
    except BaseException:
        workspace.close()
        if own_gradio_cache:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        raise
    allowed_models = [value for _, value in model_choices(start_model)]
    busy = {"runs": 0}  # runs working now: a click meanwhile is told that it waits
    busy_lock = threading.Lock()

    def check(video: str | None, text: str, model: str, multi: bool, short_side: str, refine: bool = False,
              sam2: str | None = None) -> str:
        try:
            request = check_request(video, text, model, multi, short_side, limits, allowed_models, refine=refine,
                                    sam2=sam2)
        except AppError as exc:
            raise gr.Error(str(exc), title="Cannot run", print_exception=False) from None
        with busy_lock:
            waiting = busy["runs"]
        line = (f"{request.num_frames} frames {request.width}x{request.height}, "
                f"{len(request.expressions)} expression{'s' if len(request.expressions) != 1 else ''}, "
                f"short side {request.short_side}, model {request.model}"
                + (f", refined with SAM2 {request.sam2}" if request.refine else ""))
        if waiting:
            gr.Info("Another run is in progress: yours is queued and starts as soon as it ends.", title="Queued")
            return f"**Queued** behind another run (one at a time): {line}."
        return f"**Starting**: {line}."

    def run(video: str | None, text: str, model: str, multi: bool, short_side: str, refine: bool = False,
            sam2: str | None = None,
            progress: gr.Progress = gr.Progress()) -> tuple[str, str, str, str]:  # noqa: B008 - Gradio's idiom
        with busy_lock:
            busy["runs"] += 1
        try:
            try:
                request = check_request(video, text, model, multi, short_side, limits, allowed_models,
                                        refine=refine, sam2=sam2)
                progress(0.0, desc="starting")
                phase = {"refining": False}

                def frames_done(done: int, total: int) -> None:
                    if phase["refining"]:
                        desc = f"refining with SAM2 {request.sam2}"
                    elif done < total:
                        desc = "segmenting"
                    elif request.refine:
                        desc = "segmented; starting SAM2"
                    else:
                        desc = "segmented; writing the overlay video and masks"
                    progress((done, total), desc=desc, unit="frames")

                def stage(text: str) -> None:
                    phase["refining"] = text.startswith("refining")
                    progress(1.0 if text.startswith("zip") else 0.0, desc=text)

                result = run_request(request, models, workspace, progress=frames_done, status=stage)
            except AppError as exc:
                raise gr.Error(str(exc), title="Cannot run", print_exception=False) from None
            except Exception as exc:  # noqa: BLE001 - a bug: log it, show one line
                logger.exception("run failed")
                raise gr.Error(f"the run failed ({type(exc).__name__}: {exc}); see the server log",
                               title="Error") from None
        finally:
            with busy_lock:
                busy["runs"] -= 1
        done = (f"**Done**: {result.num_frames} frames, {len(result.expressions)} expression"
                f"{'s' if len(result.expressions) != 1 else ''} in {result.seconds:.1f} s with {request.model}"
                + (f", refined with SAM2 {request.sam2}." if request.refine else "."))
        if result.summary:
            done += "\n\n" + "\n".join(f"- {line}" for line in result.summary.splitlines())
        return done, str(result.overlay), str(result.contact_sheet), str(result.masks_zip)

    def use_sample() -> tuple[str, str]:
        return str(sample.path), "\n".join(sample_expressions(sample))

    limits_line = (f"Limits: videos up to {limits.max_mb:g} MB and {limits.max_frames} frames; at most 12 "
                   "expressions; one run at a time (others wait in a queue). Outputs are kept for the latest "
                   f"{config.keep_runs} runs and deleted when the server stops.")
    with gr.Blocks(title="ReferDINO", analytics_enabled=False, delete_cache=(600, 3600)) as blocks:
        gr.Markdown(f"## {TITLE}\nUpload a video (or use the sample clip), describe the objects to segment, one "
                    "expression per line, and press **Segment**. You get a video with every expression's mask in "
                    "its own colour, a contact sheet and the masks as PNGs in a zip.")
        model_info = gr.Markdown(describe_model(start_model) + _fallback_note(config.model, start_model),
                                 elem_id="model-info")
        with gr.Row():
            with gr.Column(scale=1):
                video_in = gr.Video(label="Video", sources=["upload"], include_audio=True, elem_id="video-in",
                                    height=300)
                sample_btn = gr.Button("Use the sample clip (synthetic shapes)", elem_id="sample", size="sm")
                text_in = gr.Textbox(label="Expressions, one per line", lines=3, max_lines=12,
                                     placeholder="the cat wagging its tail\nthe dog on the left",
                                     elem_id="expressions")
                model_in = gr.Dropdown(model_choices(start_model), value=start_model, label="Model",
                                       elem_id="model")
                with gr.Row():
                    multi_in = gr.Checkbox(False, label="Multi-object (every match above the threshold)",
                                           elem_id="multi")
                    side_in = gr.Dropdown(list(SHORT_SIDES), value="auto", label="Short side (pixels)",
                                          info="auto: the video's own, at most 360", elem_id="short-side")
                with gr.Row():
                    refine_in = gr.Checkbox(False, label="Refine with SAM2",
                                            info="the ReferDINO-Plus recipe after ReferDINO: sharper masks, much "
                                                 "slower (for a GPU); the checkpoint is downloaded once",
                                            elem_id="refine")
                    sam2_in = gr.Dropdown(sam2_choices(), value=DEFAULT_SAM2, label="SAM2 size",
                                          info=f"SAM2.1; {DEFAULT_SAM2} is the recipe's", elem_id="sam2")
                run_btn = gr.Button("Segment", variant="primary", elem_id="run")
                gr.Markdown(limits_line, elem_id="limits")
            with gr.Column(scale=1):
                status = gr.Markdown("", elem_id="status")
                video_out = gr.Video(label="Overlay (all expressions, with a legend)", interactive=False,
                                     loop=True, elem_id="overlay", height=360)
                sheet_out = gr.Image(label="Contact sheet", type="filepath", interactive=False, elem_id="sheet")
                zip_out = gr.File(label="Masks (NN_expression/masks/*.png + masks.json)", interactive=False,
                                  elem_id="masks-zip")
        inputs = [video_in, text_in, model_in, multi_in, side_in, refine_in, sam2_in]
        sample_btn.click(use_sample, None, [video_in, text_in], queue=False, api_name=False)
        model_in.change(describe_model, model_in, model_info, queue=False, api_name=False)
        run_btn.click(check, inputs, status, concurrency_limit=None, concurrency_id="check", api_name=False,
                      show_progress="hidden").success(
            run, inputs, [status, video_out, sheet_out, zip_out], concurrency_limit=1, concurrency_id="segment",
            api_name="segment")
    blocks.queue(default_concurrency_limit=1, max_size=32)
    return App(blocks, config, start_model, models, workspace, sample, own_gradio_cache=own_gradio_cache)


def serve(config: AppConfig) -> int:
    """`referdino app`: build, serve until Ctrl-C (or SIGTERM), then stop and delete the temporary files."""
    import signal
    import time

    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's start-up checks of its own local URL
    app = build_app(config)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        url = app.launch(block=False, quiet=True)
        print(f"referdino app: open {url} in a browser (Ctrl-C to stop); model {app.model}, another can be chosen "
              "on the page")
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("referdino app: stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        app.close()
    return 0
