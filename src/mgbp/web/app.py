"""`mgbp serve`'s page (Gradio): upscale images and videos, and slide W (Algorithm 1 line 1: x = [X, W N(0,1)])
along the perception-distortion trajectory (Fig. 14) while watching a region of the result change.

The page only wires widgets to `mgbp.web.engine.Engine`, which calls the same library functions as `mgbp
upscale`. Gradio is an optional extra (`mgbp[web]`) imported here only. Errors a user can cause (`MgbpError`,
unreadable files) reach the page as one line (`gr.Error`, file names instead of server paths, HTML escaped);
anything else shows Gradio's bare "Error", never a stack trace. All work on the device goes through one queue
(`concurrency_id` "device", one at a time) and the engine's device lock. Endpoint for scripts: `/upscale`
(image file, model, scale, W) -> the output file.
"""

# No `from __future__ import annotations`: Gradio reads the handlers' annotations (gr.Request, gr.SelectData,
# FileData) as objects to recognise its special arguments.

import contextlib
import html
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mgbp.errors import ConfigError, MgbpError
from mgbp.web.engine import AUTO_MODEL, CRF_RANGE, PREVIEW_SIDE, WEIGHT_FILE, Engine
from mgbp.web.jobs import Eta, Job, JobCancelled

DEVICE_QUEUE = "device"  # the Gradio concurrency group of every event that runs a model
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_MAX_UPLOAD_MB = 200
CACHE_SWEEP = (600, 3600)  # Gradio removes its cached uploads/outputs older than an hour, every 10 minutes
QUEUE_SIZE = 32  # requests waiting for the device beyond this are refused with a message
WEIGHT_EXTENSIONS = [".safetensors", ".model", ".pt", ".pth"]


def require_gradio():
    """The gradio module, or a one-line ConfigError saying how to install it."""
    try:
        import gradio
    except ImportError:
        raise ConfigError("mgbp serve needs the web extra: pip install 'mgbp[web]'") from None
    return gradio


# ------------------------------------------------------------------------------------------------- helpers


def readable(exc: BaseException, engine: Engine) -> str:
    """One line for the page: the message's first line, server folders cut from paths, HTML escaped."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{Path(exc.filename).name + ': ' if exc.filename else ''}{exc.strerror}"
    for root in {str(engine.work_root), str(Path(engine.work_root).resolve()), tempfile.gettempdir()}:
        text = re.sub(re.escape(root.rstrip("/")) + r"/(?:[^\s:/]+/)*", "", text)
    return html.escape(text, quote=False)


@contextlib.contextmanager
def page_errors(engine: Engine, cancellable: bool = False):
    """Turn what a user can cause into gr.Error (one readable line, no stack trace on the console); with
    `cancellable`, JobCancelled passes through for the handler to end quietly (`cancelled`)."""
    gr = require_gradio()
    try:
        yield
    except JobCancelled:
        if cancellable:
            raise
        raise gr.Error("Cancelled.", title="Cancelled", print_exception=False) from None
    except (MgbpError, OSError) as exc:
        raise gr.Error(readable(exc, engine), print_exception=False) from None


def cancelled(outputs: int):
    """What a cancelled handler returns: a note, and its outputs left as they were (an error would paint them
    red when the job's thread ends after Gradio has dropped the request)."""
    gr = require_gradio()
    gr.Info("Cancelled.")
    return gr.skip() if outputs == 1 else tuple(gr.skip() for _ in range(outputs))


def eta_reporter(progress, clock=time.monotonic):
    """A Job.on_step that appends the time left to the unit of Gradio's innermost progress level (the library's
    tqdm bar of tiles or frames, which `gr.Progress(track_tqdm=True)` follows)."""
    estimates: dict[int, tuple[Eta, str]] = {}

    def on_step() -> None:
        levels = getattr(progress, "iterables", None)
        if not levels:
            return
        level = levels[-1]
        done, total = getattr(level, "index", None), getattr(level, "length", None)
        if done is None or not total:
            return
        eta, unit = estimates.setdefault(id(level), (Eta(clock), getattr(level, "unit", "") or ""))
        text = eta.text(done, total)
        level.unit = f"{unit} ({text})" if text else unit

    return on_step


def first_file(files) -> str | None:
    if not files:
        return None
    item = files[0] if isinstance(files, (list, tuple)) else files
    return item if isinstance(item, str) else getattr(item, "name", None) or item.get("path")


def all_files(files) -> list[str]:
    if not files:
        return []
    return [first_file([item]) for item in (files if isinstance(files, (list, tuple)) else [files])]


def session_of(request) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def model_choices(video: bool) -> list[tuple[str, str]]:
    """(label, value) of the model menu: the shipped models that fit, `auto`, and an uploaded weight file."""
    from mgbp.models import SHIPPED

    shipped = [(f"{name} (x{entry.scale}{', video' if entry.video else ''})", name)
               for name, entry in SHIPPED.items() if video or not entry.video]
    if video:  # the video models first: they are the default for videos
        shipped.sort(key=lambda item: not SHIPPED[item[1]].video)
    auto = "auto: the shipped video model of the scale" if video else "auto: the shipped model for the scale"
    return [*shipped, (auto, AUTO_MODEL), ("weight file (upload)", WEIGHT_FILE)]


def image_scales() -> list[int]:
    from mgbp.models import SHIPPED

    return sorted({entry.scale for entry in SHIPPED.values() if not entry.video})


def default_image_model() -> tuple[str, int]:
    from mgbp.models import default_model_for_scale
    from mgbp.models.weights import DEFAULT_SCALE

    return default_model_for_scale(DEFAULT_SCALE), DEFAULT_SCALE


def describe_model(model) -> str:
    parameters = sum(p.numel() for p in model.parameters())
    kind = "video" if model.is_video else "image"
    return (f"**{model.family}** {kind} model, x{model.scale}, "
            f"{parameters / 1000:.0f} k parameters")


# ------------------------------------------------------------------------------------------------- the page


def create_app(engine: Engine):
    """The Gradio Blocks of the page, its handlers bound to `engine`."""
    gr = require_gradio()
    from gradio.data_classes import FileData

    from mgbp.io import IMAGE_EXTENSIONS

    default_model, default_scale = default_image_model()
    heavy = {"concurrency_id": DEVICE_QUEUE, "concurrency_limit": 1}

    # ---- image handlers -------------------------------------------------------------------------------

    def show_source(files):
        path = first_file(files)
        if path is None:
            return None, None
        with page_errors(engine):
            view, _region = engine.source_view(path)
        return view, None

    def pick_point(files, evt: gr.SelectData):
        path = first_file(files)
        if path is None or evt is None or evt.index is None:
            return gr.skip(), gr.skip()
        x, y = evt.index[:2]
        with page_errors(engine):
            view, _region = engine.source_view(path, (float(y), float(x)))
        return view, (float(y), float(x))

    def preview(files, model_choice, scale, weights, noise, point, request: gr.Request):
        path = first_file(files)
        if path is None:
            return None, ""
        if model_choice == WEIGHT_FILE and first_file(weights) is None:
            return None, "Upload a weight file to see the preview."
        try:
            with page_errors(engine, cancellable=True):
                model = engine.model(model_choice, scale, first_file(weights))
                result = engine.preview(path, model, float(noise), point, session=session_of(request))
        except JobCancelled:
            return cancelled(2)
        r = result.region
        note = (f"Region {r.height}x{r.width} at row {r.top}, column {r.left} of the first image, W = "
                f"{float(noise):g}: the full render's own pixels.")
        if not result.exact:
            note = "This model draws its own noise: at W > 0 the preview shows the texture, not the exact pixels."
        return (result.before, result.after), note

    def render(files, model_choice, scale, weights, noise, request: gr.Request,
               progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio's way of asking for progress
        paths = all_files(files)
        def on_image(index, count, name):
            progress((index, count), desc=f"upscaling {name}", unit="images")

        try:
            with page_errors(engine, cancellable=True):
                model = engine.model(model_choice, scale, first_file(weights))
                result = engine.render(paths, model, float(noise), session=session_of(request),
                                       job=Job(on_step=eta_reporter(progress)), on_image=on_image)
        except JobCancelled:
            return cancelled(2)
        return (str(result.before), str(result.after)), str(result.download)

    def curve(files, model_choice, scale, weights, noise, point, request: gr.Request):
        path = first_file(files)
        if path is None:
            raise gr.Error("Upload an image first.", print_exception=False)
        try:
            with page_errors(engine, cancellable=True):
                model = engine.model(model_choice, scale, first_file(weights))
                result = engine.curve(path, model, float(noise), point, session=session_of(request))
        except JobCancelled:
            return cancelled(1)
        return str(result.figure)

    def check_weights(weights):
        path = first_file(weights)
        if path is None:
            return "", gr.skip()
        with page_errors(engine):
            model = engine.model(WEIGHT_FILE, None, path)
        return describe_model(model), int(model.scale)

    def choose_model(choice):
        from mgbp.models import SHIPPED

        entry = SHIPPED.get(choice)
        return gr.update(visible=choice == WEIGHT_FILE), (entry.scale if entry is not None else gr.skip())

    def choose_scale(scale, choice):
        from mgbp.models import SHIPPED, default_model_for_scale

        if choice in SHIPPED and SHIPPED[choice].scale != int(scale):
            with page_errors(engine):
                return default_model_for_scale(int(scale))
        return gr.skip()

    def cancel(request: gr.Request):
        engine.queue.cancel(session_of(request) or "")

    # ---- video handler -------------------------------------------------------------------------------

    def render_video(video, model_choice, weights, noise, crf, frames, request: gr.Request,
                     progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio's way of asking for progress
        path = first_file(video)
        if path is None:
            raise gr.Error("Upload a video first.", print_exception=False)
        try:
            with page_errors(engine, cancellable=True):
                model = engine.model(model_choice, None, first_file(weights), video=True)
                target = engine.render_video(path, model, float(noise), crf, frames, session=session_of(request),
                                             job=Job(on_step=eta_reporter(progress)))
        except JobCancelled:
            return cancelled(2)
        playable = target.suffix.lower() in (".mp4", ".webm", ".ogg")
        return (str(target) if playable else None), str(target)

    # ---- API for scripts -----------------------------------------------------------------------------

    def upscale(image: FileData, model: str, scale: int, noise: float) -> FileData:
        """Upscale one image as `mgbp upscale -m MODEL -s SCALE -W NOISE` does (seed 0); returns the output file
        (same format, bit depth and alpha as the input). MODEL: a shipped name or "auto"."""
        path = image.get("path") if isinstance(image, dict) else getattr(image, "path", None)
        if not path:
            raise gr.Error("no image given", print_exception=False)
        with page_errors(engine):
            result = engine.render([path], engine.model(model, scale), float(noise), progress=False)
        return FileData(path=str(result.download), orig_name=result.download.name)

    # ---- layout --------------------------------------------------------------------------------------

    with gr.Blocks(title="mgbp: Multi-Grid Back-Projection super-resolution", analytics_enabled=False,
                   delete_cache=CACHE_SWEEP) as demo:
        gr.Markdown("## mgbp: Multi-Grid Back-Projection super-resolution\n"
                    "W is the noise amplitude: 0 gives the most faithful image (best PSNR), 1 the most "
                    "natural-looking texture. Slide it and watch the preview.")
        point = gr.State(None)
        with gr.Tab("Image"), gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label="Images (one or many)", file_count="multiple",
                                file_types=list(IMAGE_EXTENSIONS), elem_id="images")
                source = gr.Image(label=f"Click to move the preview region ({PREVIEW_SIDE} pixels)",
                                  interactive=False, type="numpy", format="png", elem_id="source", buttons=[])
                with gr.Row():
                    model = gr.Dropdown(model_choices(video=False), value=default_model, label="Model",
                                        elem_id="model")
                    scale = gr.Dropdown(image_scales(), value=default_scale, label="Scale", elem_id="scale")
                weights = gr.File(label="Weight file (.safetensors, or the authors' .model)",
                                  file_types=WEIGHT_EXTENSIONS, visible=False, elem_id="weights")
                model_info = gr.Markdown()
                noise = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="W (0: fidelity, 1: texture)",
                                  elem_id="noise")
                with gr.Row():
                    render_button = gr.Button("Upscale", variant="primary", elem_id="render")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
                download = gr.File(label="Download", elem_id="download", interactive=False)
                curve_button = gr.Button("Perception curve of this image (NIQE against W)", elem_id="curve")
                curve_view = gr.Image(label="NIQE against W", type="filepath", interactive=False,
                                      elem_id="curve-plot", buttons=["download"])
            with gr.Column(scale=3):
                preview_view = gr.ImageSlider(label="Preview: bicubic | MGBP (scroll to zoom)", format="png",
                                              image_mode=None, elem_id="preview", interactive=False,
                                              max_height=440)
                preview_note = gr.Markdown(elem_id="preview-note")
                result_view = gr.ImageSlider(label="Result: bicubic | MGBP (first image)", type="filepath",
                                             image_mode=None, elem_id="result", interactive=False,
                                             max_height=440)
        with gr.Tab("Video"), gr.Row():
            with gr.Column(scale=2):
                video = gr.File(label="Video", file_types=["video"], elem_id="video")
                video_model = gr.Dropdown(model_choices(video=True), value=AUTO_MODEL, label="Model",
                                          elem_id="video-model")
                video_weights = gr.File(label="Weight file (.safetensors, or the authors' .model)",
                                        file_types=WEIGHT_EXTENSIONS, visible=False)
                video_noise = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="W (0: fidelity, 1: texture)")
                crf = gr.Slider(CRF_RANGE[0], CRF_RANGE[1], value=18, step=1,
                                label="Quality: CRF (lower is better and larger)")
                frames = gr.Number(0, precision=0, minimum=0, label="Frames (0: all)")
                with gr.Row():
                    video_button = gr.Button("Upscale video", variant="primary", elem_id="render-video")
                    video_cancel = gr.Button("Cancel", variant="stop")
            with gr.Column(scale=3):
                video_view = gr.Video(label="Result", format=None, interactive=False)
                video_download = gr.File(label="Download (audio kept)", interactive=False)

        # ---- events ----------------------------------------------------------------------------------
        preview_inputs = [files, model, scale, weights, noise, point]
        preview_event = {"fn": preview, "inputs": preview_inputs, "outputs": [preview_view, preview_note],
                         "trigger_mode": "always_last", "show_progress": "minimal", "api_visibility": "private",
                         **heavy}
        files.change(show_source, [files], [source, point], api_visibility="private").then(**preview_event)
        source.select(pick_point, [files], [source, point], api_visibility="private").then(**preview_event)
        noise.change(**preview_event)
        model.input(choose_model, [model], [weights, scale], api_visibility="private").then(**preview_event)
        scale.input(choose_scale, [scale, model], [model], api_visibility="private").then(**preview_event)
        weights.upload(check_weights, [weights], [model_info, scale], api_visibility="private").then(
            **preview_event)
        render_event = render_button.click(render, [files, model, scale, weights, noise],
                                           [result_view, download], api_visibility="private", **heavy)
        curve_button.click(curve, [files, model, scale, weights, noise, point], [curve_view],
                           api_visibility="private", **heavy)
        video_model.input(lambda choice: gr.update(visible=choice == WEIGHT_FILE), [video_model],
                          [video_weights], api_visibility="private")
        video_event = video_button.click(render_video, [video, video_model, video_weights, video_noise, crf, frames],
                                         [video_view, video_download], api_visibility="private", **heavy)
        for button in (cancel_button, video_cancel):
            button.click(cancel, None, None, cancels=[render_event, video_event], queue=False,
                         api_visibility="private")
        gr.api(upscale, api_name="upscale", **heavy)
    return demo


# ------------------------------------------------------------------------------------------------- serving


@dataclass
class Server:
    """A running app: its address, and `close()` to stop it and remove its files."""

    url: str
    demo: object
    engine: Engine
    previous_temp_dir: str | None

    def close(self) -> None:
        try:
            self.demo.close()
        finally:
            self.engine.close()
            if self.previous_temp_dir is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = self.previous_temp_dir


def start(host: str = "127.0.0.1", port: int | None = 7860, device: str | None = None,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, quiet: bool = True) -> Server:
    """Start the app in the background (Gradio's server thread) and return it; `port=None`: a free port.

    Uploads and outputs live in one temporary folder (Gradio's too, through GRADIO_TEMP_DIR) that `close`
    removes."""
    if max_upload_mb is None or not max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    if port is not None and not 0 < int(port) < 65536:
        raise ConfigError(f"--port must be from 1 to 65535, got {port}")
    require_gradio()  # imported before GRADIO_TEMP_DIR changes: Gradio's import-time folders stay its own
    work_root = Path(tempfile.mkdtemp(prefix="mgbp-serve-"))
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(work_root / "gradio")  # read by Gradio when the app is built
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    engine = None
    try:
        engine = Engine(device, work_root)
        demo = create_app(engine)
        demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
        try:
            _app, url, _share = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True,
                                            quiet=quiet, show_error=False, max_file_size=f"{int(max_upload_mb * 1e6)}b",
                                            enable_monitoring=False, share=False, inbrowser=False,
                                            ssr_mode=False, run_history=False, footer_links=["api"])
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({str(exc).splitlines()[0]})") from None
    except BaseException:
        if engine is not None:
            engine.close()
        else:
            import shutil

            shutil.rmtree(work_root, ignore_errors=True)
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
        raise
    return Server(url=url, demo=demo, engine=engine, previous_temp_dir=previous)


def exposure_warning(host: str) -> str | None:
    """A warning for addresses other machines can reach (the app has no login and no TLS)."""
    if host in LOOPBACK_HOSTS or host.startswith("127."):
        return None
    return (f"mgbp serve: warning: listening on {host}: anyone who can reach this machine on the network can "
            f"use the app and its device (no login, no TLS); use --host 127.0.0.1 to keep it local")


def serve(host: str = "127.0.0.1", port: int = 7860, device: str | None = None,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, quiet: bool = False) -> None:
    """Run the app until interrupted (Ctrl-C), then remove its files."""
    require_gradio()
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr)
    server = start(host, port, device, max_upload_mb, quiet=True)
    try:
        print(f"mgbp serve: {server.url} (device {server.engine.device}; Ctrl-C stops)", file=sys.stderr)
        if not quiet:
            print(f"mgbp serve: scripts: Client({server.url!r}).predict(handle_file(PATH), 'mgbp-x4', 4, 0.5, "
                  f"api_name='/upscale')", file=sys.stderr)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("mgbp serve: stopped", file=sys.stderr)
    finally:
        server.close()
