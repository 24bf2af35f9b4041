"""The Gradio page of ``arn-lightning serve`` (docs/app.md): three tabs on :mod:`arn_lightning.app.logic`, each built
by one small function (:func:`run_tab`, :func:`open_tab`, :func:`compare_tab`) whose events call the methods of
:class:`Handlers`.

Per-session state only: each handler finds its session's folder from ``gr.Request.session_hash``; results live in
``gr.State``. A session's folder is removed when its tab closes (``demo.unload``, which Gradio runs when the page's
heartbeat connection ends) and, as a fallback, when Gradio drops the session's state (``gr.State``'s
``delete_callback``, an hour after the tab closed); the server's whole temporary root is removed by
:meth:`AppContext.close` when the server stops. Gradio's own upload cache is pointed into that root
(``GRADIO_TEMP_DIR``), an upload is moved into the session's folder as soon as a handler sees it, and uploads expire
and are capped (:mod:`arn_lightning.app.access`). Every path typed into the page is checked against what the server
was started with (:class:`~arn_lightning.app.access.ReadablePaths`) before it is read.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import shutil  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from arn_lightning.app import logic  # noqa: E402
from arn_lightning.app.access import (  # noqa: E402
    REFUSED,
    AccessError,
    ReadablePaths,
    UploadLimits,
    UploadSweeper,
    prune_uploads,
)
from arn_lightning.vocab import CONSTRAINTS, OBJECT_CLASSES, PREDICATES  # noqa: E402

SAMPLE_NAME = "sample: a box moving towards a person (12 frames)"
NO_SAMPLE = "(none: use the uploaded file)"
ALL = "all"
#: What the handlers show as a message in the page (anything else would be a stack trace).
SHOWN_ERRORS = (logic.AppInputError, AccessError)


@dataclass
class AppSettings:
    """Settings of one server (``arn-lightning serve`` options).

    Attributes:
        checkpoint: the default checkpoint (readable).
        runs: a folder searched for ``*.ckpt`` (readable, with everything under it).
        root: a default AG root for the compare tab (readable, with everything under it).
        max_upload_mb: largest upload in MB.
        max_seconds: longest video in seconds.
        temp_root: the server's temporary root (default: a new folder in the system's temporary folder).
        upload_limits: how long uploads live and their total cap.
    """

    checkpoint: Path | None = None
    runs: Path | None = None
    root: Path | None = None
    max_upload_mb: int = logic.DEFAULT_MAX_UPLOAD_MB
    max_seconds: float = logic.DEFAULT_MAX_SECONDS
    temp_root: Path | None = None
    upload_limits: UploadLimits = field(default_factory=UploadLimits)


@dataclass
class AppContext:
    """What a built app shares between its sessions (nothing session-specific)."""

    settings: AppSettings
    temp_root: Path
    sessions: logic.SessionFolders
    readable: ReadablePaths
    predictors: logic.PredictorCache = field(default_factory=logic.PredictorCache)
    samples: dict[str, Path] = field(default_factory=dict)
    sweeper: UploadSweeper | None = None

    def close(self) -> None:
        """Stop the upload sweeper and remove the server's temporary root (every session folder, upload and
        sample); safe to call more than once."""
        if self.sweeper is not None:
            self.sweeper.stop()
        shutil.rmtree(self.temp_root, ignore_errors=True)


def theme() -> gr.themes.Base:
    """A theme with system fonts only (nothing fetched from the internet)."""
    return gr.themes.Base(
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def _message(text: str, error: bool = False) -> str:
    return f"**Error:** {text}" if error else text


def _slider(count: int) -> Any:
    """The frame slider of ``count`` frames (hidden without frames)."""
    return gr.update(minimum=0, maximum=max(1, count - 1), value=0, visible=count > 0)


def _triplet_table(elem_id: str) -> gr.Dataframe:
    return gr.Dataframe(
        headers=logic.TRIPLET_COLUMNS, label="Triplets of the frame", interactive=False, elem_id=elem_id
    )


class Handlers:
    """The page's event handlers, bound to one server's :class:`AppContext` (Gradio finds the ``gr.Request`` and
    ``gr.Progress`` parameters of bound methods by their annotations and defaults)."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self.settings = context.settings

    # ------------------------------------------------------------------------------------------- sessions
    def folder(self, request: gr.Request) -> Path:
        """The session's folder (created on first use)."""
        return self.context.sessions.folder(request.session_hash)

    def readable(self, path: str, request: gr.Request) -> Path:
        """``path`` resolved when the server may read it for this session (raises :class:`AccessError`)."""
        return self.context.readable.check(path, self.context.sessions.path(request.session_hash))

    def take_upload(self, upload: Any, folder: Path) -> Path | None:
        """Move an upload from Gradio's cache (inside the server's temporary root, nowhere else) into the session
        folder, then prune the uploads (:func:`~arn_lightning.app.access.prune_uploads`, this one kept)."""
        if not upload:
            return None
        source = Path(upload if isinstance(upload, str) else getattr(upload, "path", None) or upload["path"])
        if Path(os.path.realpath(self.context.temp_root)) not in Path(os.path.realpath(source)).parents:
            raise AccessError(REFUSED)
        target = logic.new_subfolder(folder, "upload") / source.name
        shutil.copyfile(source, target)
        source.unlink(missing_ok=True)
        prune_uploads(self.context.temp_root, self.settings.upload_limits, keep=[target])
        return target

    @staticmethod
    def state(request: gr.Request) -> dict[str, Any]:
        return {"session": request.session_hash}

    def delete_state(self, value: Any) -> None:
        """``gr.State`` delete callback (Gradio drops a closed session's state after an hour): drop its folder."""
        if isinstance(value, dict) and value.get("session"):
            self.context.sessions.remove(value["session"])

    def end_session(self, request: gr.Request) -> None:
        self.context.sessions.remove(request.session_hash)

    # ------------------------------------------------------------------------------------------- run a video
    def show_run_frame(self, state: dict[str, Any] | None, index: float) -> tuple[Any, Any, Any]:
        if not state or "run" not in state:
            return None, None, []
        run: logic.VideoRun = state["run"]
        i = min(max(0, int(index)), len(run.graphs) - 1)
        graph = run.graphs[i]
        path = logic.graph_image(graph, run.layout, run.folder / f"graph_{i:05d}.png")
        image = run.frame_images[i]
        return (str(image) if image else None), str(path), logic.triplet_table(graph.triplets)

    def _video(self, file: Any, sample_name: str, folder: Path) -> Path:
        path = self.take_upload(file, folder)
        if path is None and sample_name in self.context.samples:
            path = self.context.samples[sample_name]
        if path is None:
            raise logic.AppInputError("Expected a video: upload one or pick a sample")
        return path

    def _checkpoint(self, checkpoint_path: str, request: gr.Request) -> Path:
        if not checkpoint_path:
            raise logic.AppInputError("Expected a checkpoint (serve --checkpoint or --runs)")
        return self.readable(checkpoint_path, request)

    def run_video(
        self,
        file: Any,
        sample_name: str,
        checkpoint_path: str,
        k: float,
        t: float,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[Any, ...]:
        folder, state = self.folder(request), self.state(request)
        try:
            path = self._video(file, sample_name, folder)
            checkpoint = self._checkpoint(checkpoint_path, request)
            source = logic.check_video(path, self.settings.max_upload_mb * 1_000_000, self.settings.max_seconds)
            progress(0, desc="loading the model")
            predictor = self.context.predictors.get(checkpoint)

            def report(done: int, total: int | None) -> None:
                progress((done, total) if total else None, desc=f"frame {done}", unit="frames")

            with self.context.predictors.lock:
                target = logic.new_subfolder(folder, "run")
                run = logic.run_video(predictor, source, target, int(k), float(t), self.settings.max_seconds, report)
        except SHOWN_ERRORS as error:
            return (_message(str(error), error=True), state, None, None, gr.update(visible=False), None, None, [], None)
        state["run"] = run
        frame, graph, table = self.show_run_frame(state, 0)
        text = f"**{len(run.graphs)} frames** of {source.name} at {source.fps:g} frames/s"
        video, timeline = (str(run.video) if run.video else None), (str(run.timeline) if run.timeline else None)
        slider = gr.update(minimum=0, maximum=max(1, len(run.graphs) - 1), value=0, visible=True)
        return text, state, video, str(run.lines), slider, frame, graph, table, timeline

    # ------------------------------------------------------------------------------------------- open output
    def show_open_frame(self, state: dict[str, Any] | None, index: float) -> tuple[Any, Any, Any]:
        if not state or "view" not in state or not state["view"].graphs:
            return None, None, []
        view: logic.OutputView = state["view"]
        i = min(max(0, int(index)), len(view.graphs) - 1)
        copy = state["copy"]
        graph_png = logic.graph_image(view.graphs[i], view.layout, copy / f"graph_{i:05d}.png")
        image = view.frame_image(i)
        if image is not None:
            image = Path(shutil.copyfile(image, copy / f"frame_{i:05d}.png"))
        return (str(image) if image else None), str(graph_png), logic.triplet_table(view.graphs[i].triplets)

    def open_folder(self, path: str, request: gr.Request) -> tuple[Any, ...]:
        state = self.state(request)
        try:
            view = logic.open_output(self.readable(path, request))
        except SHOWN_ERRORS as error:
            return (_message(str(error), error=True), state, gr.update(visible=False), None, None, [], None, None)
        copy = logic.new_subfolder(self.folder(request), "view")
        state.update(view=view, copy=copy)
        video = shutil.copyfile(view.video, copy / "annotated.mp4") if view.video else None
        timeline = shutil.copyfile(view.timeline, copy / "timeline.png") if view.timeline else None
        frame, graph, table = self.show_open_frame(state, 0)
        text = f"**{len(view.graphs)} frames** (complete lines) in {view.folder}"
        slider = _slider(len(view.graphs))
        return text, state, slider, frame, graph, table, video and str(video), timeline and str(timeline)

    # ------------------------------------------------------------------------------------------- compare
    def show_compare_frame(
        self, state: dict[str, Any] | None, key: str | None, constraint_name: str, k: float, p: str, o: str
    ) -> tuple[Any, Any, Any, Any]:
        if not state or "comparison" not in state or not key or key not in state["comparison"].predictions:
            return None, [], [], ""
        comparison: logic.Comparison = state["comparison"]
        pred_rows, gt_rows, hits = logic.compare_frame(
            comparison.predictions[key], comparison.targets[key], constraint_name, int(k)
        )
        index = comparison.frames.index(key)
        image = logic.comparison_frame_image(comparison, key, int(k), state["copy"] / f"frame_{index:05d}.png")
        summary = f"{key}: {hits} of {len(gt_rows)} GT triplets hit within R@{int(k)} ({constraint_name})"
        return (
            str(image) if image else None,
            logic.filter_rows(pred_rows, p, o, logic.COMPARE_PRED_COLUMNS),
            logic.filter_rows(gt_rows, p, o, logic.COMPARE_GT_COLUMNS),
            summary,
        )

    def load(
        self,
        root: str,
        predictions: str,
        task_name: str,
        split_name: str,
        constraint_name: str,
        k: float,
        p: str,
        o: str,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        state = self.state(request)
        try:
            readable = self.readable(root, request), self.readable(predictions, request)
            comparison = logic.load_comparison(*readable, task_name, split_name)
        except SHOWN_ERRORS as error:
            return (_message(str(error), error=True), state, None, gr.update(choices=[], value=None))
        copy = logic.new_subfolder(self.folder(request), "compare")
        state.update(comparison=comparison, copy=copy)
        chart = logic.recall_chart(comparison.report, constraint_name, int(k), copy / "recall.png")
        keys = logic.frames_with(comparison, p, o)
        report, k = comparison.report[constraint_name], int(k)
        text = (
            f"**{len(comparison.frames)} frames** with a prediction of {comparison.report['frames']} in the "
            f"{split_name} split. {constraint_name}: R@{k} = {report[f'R@{k}']:.3f}, "
            f"mR@{k} (aggregated over frames) = {report[f'mR@{k}']:.3f}, "
            f"mR_per_frame@{k} (mean of per-frame recalls) = {report[f'mR_per_frame@{k}']:.3f}"
        )
        return text, state, str(chart), gr.update(choices=keys, value=keys[0] if keys else None)

    @staticmethod
    def refilter(state: dict[str, Any] | None, p: str, o: str) -> Any:
        if not state or "comparison" not in state:
            return gr.update(choices=[], value=None)
        keys = logic.frames_with(state["comparison"], p, o)
        return gr.update(choices=keys, value=keys[0] if keys else None)


def run_tab(handlers: Handlers, checkpoints: list[str]) -> None:
    """The "Run a video" tab: upload or sample, checkpoint, top-k and threshold; the annotated video, a frame
    slider with the frame, its graph and triplets, the timeline and the JSON lines."""
    with gr.Tab("Run a video", id="run"):
        state = gr.State(None, delete_callback=handlers.delete_state)
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Video file", file_count="single", elem_id="run-upload")
                samples = [NO_SAMPLE, *handlers.context.samples]
                sample = gr.Dropdown(samples, value=NO_SAMPLE, label="Or a generated sample")
                first = checkpoints[0] if checkpoints else None
                checkpoint = gr.Dropdown(checkpoints, value=first, label="Checkpoint", allow_custom_value=True)
                with gr.Row():
                    top_k = gr.Slider(1, 50, value=10, step=1, label="top-k triplets per frame")
                    threshold = gr.Slider(0.0, 1.0, value=0.1, step=0.01, label="threshold")
                button = gr.Button("Run", variant="primary", elem_id="run-button")
                message = gr.Markdown(elem_id="run-message")
            with gr.Column():
                annotated = gr.Video(label="Annotated video", elem_id="run-video")
                download = gr.File(label="Scene graphs (JSON lines)", elem_id="run-download")
        slider = gr.Slider(0, 1, value=0, step=1, label="Frame", visible=False, elem_id="run-slider")
        with gr.Row():
            frame = gr.Image(label="Frame with boxes", type="filepath", elem_id="run-frame")
            graph = gr.Image(label="Scene graph", type="filepath", elem_id="run-graph")
        table = _triplet_table("run-table")
        timeline = gr.Image(label="Relation timeline", type="filepath", elem_id="run-timeline")
        outputs = [message, state, annotated, download, slider, frame, graph, table, timeline]
        inputs = [upload, sample, checkpoint, top_k, threshold]
        button.click(handlers.run_video, inputs, outputs, api_name="run_video", concurrency_limit=1)
        slider.change(handlers.show_run_frame, [state, slider], [frame, graph, table], api_name=False)


def open_tab(handlers: Handlers) -> None:
    """The "Open an inference output" tab: a folder of ``arn-lightning infer`` (also while it is written), its
    frames, graphs, triplets, video and timeline."""
    with gr.Tab("Open an inference output", id="open"):
        state = gr.State(None, delete_callback=handlers.delete_state)
        with gr.Row():
            folder = gr.Textbox(label="Output folder of `arn-lightning infer`", elem_id="open-folder")
            button = gr.Button("Open", variant="primary", elem_id="open-button")
            refresh = gr.Button("Refresh", elem_id="open-refresh")
        message = gr.Markdown(elem_id="open-message")
        slider = gr.Slider(0, 1, value=0, step=1, label="Frame", visible=False, elem_id="open-slider")
        with gr.Row():
            frame = gr.Image(label="Frame with boxes (frames/ of --save-frames)", type="filepath")
            graph = gr.Image(label="Scene graph", type="filepath", elem_id="open-graph")
        table = _triplet_table("open-table")
        with gr.Row():
            video = gr.Video(label="annotated.mp4")
            timeline = gr.Image(label="timeline.png", type="filepath")
        outputs = [message, state, slider, frame, graph, table, video, timeline]
        button.click(handlers.open_folder, [folder], outputs, api_name="open_output")
        refresh.click(handlers.open_folder, [folder], outputs, api_name=False)
        slider.change(handlers.show_open_frame, [state, slider], [frame, graph, table], api_name=False)


def compare_tab(handlers: Handlers, root: Path | None) -> None:
    """The "Compare with ground truth" tab: an AG root and a prediction file scored as ``evaluate`` scores it, the
    per-predicate recall chart, and each frame's prediction and ground truth with hit / miss marks."""
    with gr.Tab("Compare with ground truth", id="compare"):
        state = gr.State(None, delete_callback=handlers.delete_state)
        with gr.Row():
            root_box = gr.Textbox(value=str(root) if root else "", label="Action Genome root", elem_id="cmp-root")
            label = "Prediction file (predictions_test.jsonl, or an infer folder on AG frames)"
            pred_box = gr.Textbox(label=label, elem_id="cmp-pred")
        with gr.Row():
            task = gr.Dropdown(["sgdet", "sgcls", "predcls"], value="sgdet", label="task")
            split = gr.Dropdown(["test", "train"], value="test", label="split")
            constraint = gr.Dropdown(list(CONSTRAINTS), value="with", label="constraint")
            k_box = gr.Dropdown([10, 20, 50, 100], value=20, label="K")
            button = gr.Button("Load", variant="primary", elem_id="cmp-load")
        message = gr.Markdown(elem_id="cmp-message")
        recall = gr.Image(label="Per-predicate recall", type="filepath", elem_id="cmp-recall")
        with gr.Row():
            predicate = gr.Dropdown([ALL, *PREDICATES], value=ALL, label="predicate filter")
            obj = gr.Dropdown([ALL, *OBJECT_CLASSES], value=ALL, label="object filter")
            pick = gr.Dropdown([], label="frame", elem_id="cmp-frame")
        frame_message = gr.Markdown(elem_id="cmp-frame-message")
        image = gr.Image(label="Prediction (left) and ground truth (right)", type="filepath")
        with gr.Row():
            pred_table = gr.Dataframe(
                headers=logic.COMPARE_PRED_COLUMNS,
                label="Predicted (first K of the constraint)",
                interactive=False,
                elem_id="cmp-pred-table",
            )
            gt_table = gr.Dataframe(
                headers=logic.COMPARE_GT_COLUMNS, label="Ground truth", interactive=False, elem_id="cmp-gt-table"
            )
        inputs = [root_box, pred_box, task, split, constraint, k_box, predicate, obj]
        button.click(handlers.load, inputs, [message, state, recall, pick], api_name="compare")
        frame_inputs, frame_outputs = [state, pick, constraint, k_box, predicate, obj], [image, pred_table, gt_table]
        for control in (pick, constraint, k_box):
            control.change(handlers.show_compare_frame, frame_inputs, [*frame_outputs, frame_message], api_name=False)
        for control in (predicate, obj):
            control.change(handlers.refilter, [state, predicate, obj], [pick], api_name=False)


def app_context(settings: AppSettings) -> AppContext:
    """The server's shared context: its temporary root (Gradio's cache inside it), the sample video, the readable
    paths, and the upload sweeper (started)."""
    temp_root = Path(settings.temp_root or tempfile.mkdtemp(prefix="arn-lightning-app-"))
    temp_root.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(temp_root)  # Gradio's upload and file cache: inside the root
    readable = ReadablePaths.started_with(settings.checkpoint, settings.runs, settings.root)
    context = AppContext(settings, temp_root, logic.SessionFolders(temp_root), readable)
    samples = temp_root / "samples"
    samples.mkdir(exist_ok=True)
    context.samples[SAMPLE_NAME] = logic.write_sample_video(samples / "sample_moving_box.mp4")
    context.sweeper = UploadSweeper(temp_root, settings.upload_limits).start()
    return context


def build_app(settings: AppSettings) -> tuple[gr.Blocks, AppContext]:
    """Build the page (not launched): a header and the three tabs.

    Returns:
        The Blocks and its context; call ``context.close()`` after the server stops.
    """
    context = app_context(settings)
    handlers = Handlers(context)
    checkpoints = [str(p) for p in logic.find_checkpoints(settings.checkpoint, settings.runs)]
    with gr.Blocks(title="ARN scene graphs") as demo:
        gr.Markdown(
            "# ARN scene graphs\nRun a video, open an `arn-lightning infer` output, or compare a prediction file "
            f"with the ground truth. Limits: uploads up to {settings.max_upload_mb} MB, videos up to "
            f"{settings.max_seconds:g} s."
        )
        run_tab(handlers, checkpoints)
        open_tab(handlers)
        compare_tab(handlers, settings.root)
        demo.unload(handlers.end_session)
    return demo, context


def launch(
    demo: gr.Blocks,
    context: AppContext,
    host: str,
    port: int,
    block: bool = True,
    auth: list[tuple[str, str]] | None = None,
) -> gr.Blocks:
    """Start the server (``block``: until Ctrl-C or SIGTERM, see ``commands/serve.py``), on ``host:port``, with the
    upload limit, the system-font theme and, with ``auth``, Gradio's login (``[(user, password), ...]``).

    The server's temporary root is removed when a blocking launch returns; with ``block=False`` call
    ``demo.close()`` and ``context.close()``.
    """
    demo.queue(default_concurrency_limit=2)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            max_file_size=f"{context.settings.max_upload_mb}mb",
            theme=theme(),
            prevent_thread_lock=not block,
            share=False,
            inbrowser=False,
            quiet=True,
            ssr_mode=False,
            auth=auth or None,
        )
    finally:
        if block:
            demo.close()
            context.close()
    return demo
