"""The Gradio page of ``arn-lightning serve`` (docs/app.md): three tabs on :mod:`arn_lightning.app.logic`.

Per-session state only: each handler finds its session's folder from ``gr.Request.session_hash``; results live in
``gr.State``. A session's folder is removed when its tab closes (``demo.unload``, which Gradio runs when the page's
heartbeat connection ends) and, as a fallback, when Gradio drops the session's state (``gr.State``'s
``delete_callback``, an hour after the tab closed); the server's whole temporary root is removed by
:func:`serve` when the server stops. Gradio's own upload cache is pointed into that root (``GRADIO_TEMP_DIR``), and an
upload is moved into the session's folder as soon as a handler sees it.
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
from arn_lightning.vocab import CONSTRAINTS, OBJECT_CLASSES, PREDICATES  # noqa: E402

SAMPLE_NAME = "sample: a box moving towards a person (12 frames)"
NO_SAMPLE = "(none: use the uploaded file)"
ALL = "all"


@dataclass
class AppSettings:
    """Settings of one server (``arn-lightning serve`` options).

    Attributes:
        checkpoint: the default checkpoint.
        runs: a folder searched for ``*.ckpt``.
        root: a default AG root for the compare tab.
        max_upload_mb: largest upload in MB.
        max_seconds: longest video in seconds.
        temp_root: the server's temporary root (default: a new folder in the system's temporary folder).
    """

    checkpoint: Path | None = None
    runs: Path | None = None
    root: Path | None = None
    max_upload_mb: int = logic.DEFAULT_MAX_UPLOAD_MB
    max_seconds: float = logic.DEFAULT_MAX_SECONDS
    temp_root: Path | None = None


@dataclass
class AppContext:
    """What a built app shares between its sessions (nothing session-specific)."""

    settings: AppSettings
    temp_root: Path
    sessions: logic.SessionFolders
    predictors: logic.PredictorCache = field(default_factory=logic.PredictorCache)
    samples: dict[str, Path] = field(default_factory=dict)

    def close(self) -> None:
        """Remove the server's temporary root (every session folder, upload and sample)."""
        shutil.rmtree(self.temp_root, ignore_errors=True)


def theme() -> gr.themes.Base:
    """A theme with system fonts only (nothing fetched from the internet)."""
    return gr.themes.Base(
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def _message(text: str, error: bool = False) -> str:
    return f"**Error:** {text}" if error else text


def _session_folder(context: AppContext, request: gr.Request) -> Path:
    return context.sessions.folder(request.session_hash)


def _take_upload(upload: Any, folder: Path) -> Path | None:
    """Move an uploaded file from Gradio's cache into the session folder."""
    if not upload:
        return None
    source = Path(upload if isinstance(upload, str) else getattr(upload, "path", upload["path"]))
    target = logic.new_subfolder(folder, "upload") / source.name
    shutil.copyfile(source, target)
    source.unlink(missing_ok=True)
    return target


def build_app(settings: AppSettings) -> tuple[gr.Blocks, AppContext]:
    """Build the page (not launched).

    Returns:
        The Blocks and its context; call ``context.close()`` after the server stops.
    """
    temp_root = Path(settings.temp_root or tempfile.mkdtemp(prefix="arn-lightning-app-"))
    temp_root.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(temp_root)  # Gradio's upload and file cache: inside the root
    context = AppContext(settings, temp_root, logic.SessionFolders(temp_root))
    samples = temp_root / "samples"
    samples.mkdir(exist_ok=True)
    context.samples[SAMPLE_NAME] = logic.write_sample_video(samples / "sample_moving_box.mp4")
    checkpoints = [str(p) for p in logic.find_checkpoints(settings.checkpoint, settings.runs)]
    max_bytes = settings.max_upload_mb * 1_000_000

    def state_for(request: gr.Request) -> dict[str, Any]:
        return {"session": request.session_hash}

    def delete_state(value: Any) -> None:
        """``gr.State`` delete callback (Gradio drops a closed session's state after an hour): drop its folder."""
        if isinstance(value, dict) and value.get("session"):
            context.sessions.remove(value["session"])

    with gr.Blocks(title="ARN scene graphs") as demo:
        gr.Markdown(
            "# ARN scene graphs\nRun a video, open an `arn-lightning infer` output, or compare a prediction file "
            f"with the ground truth. Limits: uploads up to {settings.max_upload_mb} MB, videos up to "
            f"{settings.max_seconds:g} s."
        )
        # ------------------------------------------------------------------------------------------- run a video
        with gr.Tab("Run a video", id="run"):
            run_state = gr.State(None, delete_callback=delete_state)
            with gr.Row():
                with gr.Column():
                    upload = gr.File(label="Video file", file_count="single", elem_id="run-upload")
                    sample = gr.Dropdown([NO_SAMPLE, *context.samples], value=NO_SAMPLE, label="Or a generated sample")
                    checkpoint = gr.Dropdown(
                        checkpoints,
                        value=checkpoints[0] if checkpoints else None,
                        label="Checkpoint",
                        allow_custom_value=True,
                    )
                    with gr.Row():
                        top_k = gr.Slider(1, 50, value=10, step=1, label="top-k triplets per frame")
                        threshold = gr.Slider(0.0, 1.0, value=0.1, step=0.01, label="threshold")
                    run_button = gr.Button("Run", variant="primary", elem_id="run-button")
                    run_message = gr.Markdown(elem_id="run-message")
                with gr.Column():
                    annotated = gr.Video(label="Annotated video", elem_id="run-video")
                    download = gr.File(label="Scene graphs (JSON lines)", elem_id="run-download")
            run_slider = gr.Slider(0, 1, value=0, step=1, label="Frame", visible=False, elem_id="run-slider")
            with gr.Row():
                run_frame = gr.Image(label="Frame with boxes", type="filepath", elem_id="run-frame")
                run_graph = gr.Image(label="Scene graph", type="filepath", elem_id="run-graph")
            run_table = gr.Dataframe(
                headers=logic.TRIPLET_COLUMNS, label="Triplets of the frame", interactive=False, elem_id="run-table"
            )
            run_timeline = gr.Image(label="Relation timeline", type="filepath", elem_id="run-timeline")

            def show_run_frame(state: dict[str, Any] | None, index: float) -> tuple[Any, Any, Any]:
                if not state or "run" not in state:
                    return None, None, []
                run: logic.VideoRun = state["run"]
                i = min(max(0, int(index)), len(run.graphs) - 1)
                graph = run.graphs[i]
                path = logic.graph_image(graph, run.layout, run.folder / f"graph_{i:05d}.png")
                image = run.frame_images[i]
                return (str(image) if image else None), str(path), logic.triplet_table(graph.triplets)

            def run_video(
                file: Any,
                sample_name: str,
                checkpoint_path: str,
                k: float,
                t: float,
                request: gr.Request,
                progress: gr.Progress = gr.Progress(),
            ) -> tuple[Any, ...]:
                folder = _session_folder(context, request)
                state = state_for(request)
                empty = (state, None, None, gr.update(visible=False), None, None, [], None)
                try:
                    path = _take_upload(file, folder)
                    if path is None and sample_name in context.samples:
                        path = context.samples[sample_name]
                    if path is None:
                        raise logic.AppInputError("Expected a video: upload one or pick a sample")
                    if not checkpoint_path:
                        raise logic.AppInputError("Expected a checkpoint (serve --checkpoint or --runs)")
                    source = logic.check_video(path, max_bytes, settings.max_seconds)
                    progress(0, desc="loading the model")
                    predictor = context.predictors.get(Path(checkpoint_path))

                    def report(done: int, total: int | None) -> None:
                        progress((done, total) if total else None, desc=f"frame {done}", unit="frames")

                    with context.predictors.lock:
                        run = logic.run_video(
                            predictor,
                            source,
                            logic.new_subfolder(folder, "run"),
                            int(k),
                            float(t),
                            settings.max_seconds,
                            report,
                        )
                except logic.AppInputError as error:
                    return (_message(str(error), error=True), *empty)
                state["run"] = run
                frame, graph, table = show_run_frame(state, 0)
                slider = gr.update(minimum=0, maximum=max(1, len(run.graphs) - 1), value=0, visible=True)
                text = f"**{len(run.graphs)} frames** of {source.name} at {source.fps:g} frames/s"
                return (
                    text,
                    state,
                    str(run.video) if run.video else None,
                    str(run.lines),
                    slider,
                    frame,
                    graph,
                    table,
                    str(run.timeline) if run.timeline else None,
                )

            run_button.click(
                run_video,
                [upload, sample, checkpoint, top_k, threshold],
                [
                    run_message,
                    run_state,
                    annotated,
                    download,
                    run_slider,
                    run_frame,
                    run_graph,
                    run_table,
                    run_timeline,
                ],
                api_name="run_video",
                concurrency_limit=1,
            )
            run_slider.change(
                show_run_frame, [run_state, run_slider], [run_frame, run_graph, run_table], api_name=False
            )
        # ------------------------------------------------------------------------------------------- open output
        with gr.Tab("Open an inference output", id="open"):
            open_state = gr.State(None, delete_callback=delete_state)
            with gr.Row():
                folder_box = gr.Textbox(label="Output folder of `arn-lightning infer`", elem_id="open-folder")
                open_button = gr.Button("Open", variant="primary", elem_id="open-button")
                refresh_button = gr.Button("Refresh", elem_id="open-refresh")
            open_message = gr.Markdown(elem_id="open-message")
            open_slider = gr.Slider(0, 1, value=0, step=1, label="Frame", visible=False, elem_id="open-slider")
            with gr.Row():
                open_frame = gr.Image(label="Frame with boxes (frames/ of --save-frames)", type="filepath")
                open_graph = gr.Image(label="Scene graph", type="filepath", elem_id="open-graph")
            open_table = gr.Dataframe(
                headers=logic.TRIPLET_COLUMNS, label="Triplets of the frame", interactive=False, elem_id="open-table"
            )
            with gr.Row():
                open_video = gr.Video(label="annotated.mp4")
                open_timeline = gr.Image(label="timeline.png", type="filepath")

            def show_open_frame(state: dict[str, Any] | None, index: float) -> tuple[Any, Any, Any]:
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

            def open_folder(path: str, request: gr.Request) -> tuple[Any, ...]:
                state = state_for(request)
                empty = (state, gr.update(visible=False), None, None, [], None, None)
                try:
                    view = logic.open_output(path)
                except logic.AppInputError as error:
                    return (_message(str(error), error=True), *empty)
                copy = logic.new_subfolder(_session_folder(context, request), "view")
                state.update(view=view, copy=copy)
                video = shutil.copyfile(view.video, copy / "annotated.mp4") if view.video else None
                timeline = shutil.copyfile(view.timeline, copy / "timeline.png") if view.timeline else None
                frame, graph, table = show_open_frame(state, 0)
                count = len(view.graphs)
                slider = gr.update(minimum=0, maximum=max(1, count - 1), value=0, visible=count > 0)
                text = f"**{count} frames** (complete lines) in {view.folder}"
                return text, state, slider, frame, graph, table, video and str(video), timeline and str(timeline)

            open_outputs = [
                open_message,
                open_state,
                open_slider,
                open_frame,
                open_graph,
                open_table,
                open_video,
                open_timeline,
            ]
            open_button.click(open_folder, [folder_box], open_outputs, api_name="open_output")
            refresh_button.click(open_folder, [folder_box], open_outputs, api_name=False)
            open_slider.change(
                show_open_frame, [open_state, open_slider], [open_frame, open_graph, open_table], api_name=False
            )
        # ------------------------------------------------------------------------------------------- compare
        with gr.Tab("Compare with ground truth", id="compare"):
            compare_state = gr.State(None, delete_callback=delete_state)
            with gr.Row():
                root_box = gr.Textbox(
                    value=str(settings.root) if settings.root else "", label="Action Genome root", elem_id="cmp-root"
                )
                pred_box = gr.Textbox(
                    label="Prediction file (predictions_test.jsonl, or an infer folder on AG frames)",
                    elem_id="cmp-pred",
                )
            with gr.Row():
                task = gr.Dropdown(["sgdet", "sgcls", "predcls"], value="sgdet", label="task")
                split = gr.Dropdown(["test", "train"], value="test", label="split")
                constraint = gr.Dropdown(list(CONSTRAINTS), value="with", label="constraint")
                k_box = gr.Dropdown([10, 20, 50, 100], value=20, label="K")
                load_button = gr.Button("Load", variant="primary", elem_id="cmp-load")
            cmp_message = gr.Markdown(elem_id="cmp-message")
            recall_image = gr.Image(label="Per-predicate recall", type="filepath", elem_id="cmp-recall")
            with gr.Row():
                predicate_filter = gr.Dropdown([ALL, *PREDICATES], value=ALL, label="predicate filter")
                object_filter = gr.Dropdown([ALL, *OBJECT_CLASSES], value=ALL, label="object filter")
                frame_pick = gr.Dropdown([], label="frame", elem_id="cmp-frame")
            frame_message = gr.Markdown(elem_id="cmp-frame-message")
            cmp_image = gr.Image(label="Prediction (left) and ground truth (right)", type="filepath")
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

            def show_compare_frame(
                state: dict[str, Any] | None, key: str | None, constraint_name: str, k: float, p: str, o: str
            ) -> tuple[Any, Any, Any, Any]:
                if not state or "comparison" not in state or not key:
                    return None, [], [], ""
                comparison: logic.Comparison = state["comparison"]
                if key not in comparison.predictions:
                    return None, [], [], ""
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
                state = state_for(request)
                try:
                    comparison = logic.load_comparison(root, predictions, task_name, split_name)
                except logic.AppInputError as error:
                    return (_message(str(error), error=True), state, None, gr.update(choices=[], value=None))
                copy = logic.new_subfolder(_session_folder(context, request), "compare")
                state.update(comparison=comparison, copy=copy)
                chart = logic.recall_chart(comparison.report, constraint_name, int(k), copy / "recall.png")
                keys = logic.frames_with(comparison, p, o)
                report = comparison.report[constraint_name]
                text = (
                    f"**{len(comparison.frames)} frames** with a prediction of {comparison.report['frames']} in the "
                    f"{split_name} split. {constraint_name}: R@{int(k)} = {report[f'R@{int(k)}']:.3f}, "
                    f"mR@{int(k)} (aggregated over frames) = {report[f'mR@{int(k)}']:.3f}, "
                    f"mR_per_frame@{int(k)} (mean of per-frame recalls) = {report[f'mR_per_frame@{int(k)}']:.3f}"
                )
                return text, state, str(chart), gr.update(choices=keys, value=keys[0] if keys else None)

            def refilter(state: dict[str, Any] | None, p: str, o: str) -> Any:
                if not state or "comparison" not in state:
                    return gr.update(choices=[], value=None)
                keys = logic.frames_with(state["comparison"], p, o)
                return gr.update(choices=keys, value=keys[0] if keys else None)

            load_button.click(
                load,
                [root_box, pred_box, task, split, constraint, k_box, predicate_filter, object_filter],
                [cmp_message, compare_state, recall_image, frame_pick],
                api_name="compare",
            )
            frame_inputs = [compare_state, frame_pick, constraint, k_box, predicate_filter, object_filter]
            frame_outputs = [cmp_image, pred_table, gt_table, frame_message]
            frame_pick.change(show_compare_frame, frame_inputs, frame_outputs, api_name=False)
            for control in (predicate_filter, object_filter):
                control.change(refilter, [compare_state, predicate_filter, object_filter], [frame_pick], api_name=False)
            for control in (constraint, k_box):
                control.change(show_compare_frame, frame_inputs, frame_outputs, api_name=False)

        def end_session(request: gr.Request) -> None:
            context.sessions.remove(request.session_hash)

        demo.unload(end_session)
    return demo, context


def launch(demo: gr.Blocks, context: AppContext, host: str, port: int, block: bool = True) -> gr.Blocks:
    """Start the server (``block``: until Ctrl-C), on ``host:port``, with the upload limit and the system-font theme.

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
        )
    finally:
        if block:
            demo.close()
            context.close()
    return demo
