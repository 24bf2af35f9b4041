"""The web app (``arn-lightning serve``, docs/app.md) as a person uses it: a real headless Chromium through
Selenium, and the app's API through ``gradio_client``; plus the app's matching of predicted and GT triplets against
the metric.

Screenshots of each tab go into a pytest temporary folder (printed); with ``ARN_APP_SCREENSHOTS=DIR`` also into
``DIR`` (``docs/images`` for the documentation).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio", reason="the app extra: pip install -e '.[app]'")
pytest.importorskip("selenium", reason="the test extra: pip install -e '.[test]'")

from app_fixtures import app_server, chrome, open_tab, screenshot, text_of, type_into, upload, wait_until  # noqa: E402
from arn_lightning.app import logic  # noqa: E402
from arn_lightning.vocab import PREDICATES  # noqa: E402
from infer_fixtures import InferAssets  # noqa: E402

SCREENSHOTS = Path(os.environ["ARN_APP_SCREENSHOTS"]) if os.environ.get("ARN_APP_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def ag_outputs(assets: InferAssets, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An ``infer`` output (with frame PNGs) of the first test video of the synthetic AG's frame folder, and its
    lines restricted to the test split's kept frames as a prediction file: (folder, predictions)."""
    from arn_lightning.data.ag import load_annotations
    from arn_lightning.inference.api import load_model
    from arn_lightning.inference.output import staged_directory, write_inference
    from arn_lightning.metrics.predictions import read_predictions, write_predictions
    from arn_lightning.video.files import open_frames

    base = tmp_path_factory.mktemp("app_outputs")
    annotations = load_annotations(assets.data_root, "sgdet")
    video = next(iter(annotations.videos("test")))
    folder = base / "infer_out"
    with staged_directory(folder) as staging:
        source = open_frames(assets.data_root / "frames" / video, 2.0)
        write_inference(load_model(assets.checkpoint), source, staging, top_k=5, threshold=0.0, save_frames=True)
    keys = {frame.key for frame in annotations.frames("test")}
    predictions = base / "predictions_test.jsonl"
    write_predictions(predictions, [p for p in read_predictions(folder / "scene_graphs.jsonl") if p["frame"] in keys])
    return folder, predictions


@pytest.fixture(scope="module")
def server(
    assets: InferAssets, ag_outputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Any]]:
    # started with the outputs' folder as --runs: the app reads only what it was started with
    temp_root = tmp_path_factory.mktemp("app") / "server"
    with app_server(assets.checkpoint, assets.data_root, temp_root, runs=ag_outputs[0].parent) as running:
        yield running


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = chrome(tmp_path / "downloads")
    try:
        yield driver
    finally:
        driver.quit()


def _expected_frames(video: Path) -> int:
    from arn_lightning.video.files import open_frames

    return sum(1 for _ in open_frames(video, logic.APP_FPS))


# ----------------------------------------------------------------------------------------------- browser
@pytest.mark.slow
def test_run_a_video_in_the_browser_and_the_session_folder_goes_with_the_tab(
    server: tuple[str, Any], assets: InferAssets, tmp_path: Path
) -> None:
    url, context = server
    driver = chrome(tmp_path / "downloads")
    try:
        driver.get(url)
        before = set(context.sessions.sessions())
        upload(driver, "run-upload", assets.video)
        driver.find_element("css selector", "#run-button").click()
        frames = _expected_frames(assets.video)
        wait_until(lambda: f"{frames} frames" in text_of(driver, "#run-message"), what=f"'{frames} frames' shown")
        table = wait_until(lambda: text_of(driver, "#run-table"), what="the triplet table")
        assert any(name in table.split() for name in PREDICATES), table
        graph = wait_until(
            lambda: driver.find_element("css selector", "#run-graph img").get_attribute("src"), what="the graph"
        )
        assert "graph_00000.png" in graph
        assert "scene_graphs\n.jsonl" in text_of(driver, "#run-download")  # name and suffix in two elements
        screenshot(driver, tmp_path / "screenshots", "app_run", SCREENSHOTS)
        [session] = set(context.sessions.sessions()) - before
        assert (context.sessions.path(session) / "run_1" / "scene_graphs.jsonl").is_file()
        assert [p.name for p in context.sessions.path(session).glob("upload_*/*")] == [assets.video.name]
    finally:
        driver.quit()  # the tab closes: Gradio's heartbeat ends, demo.unload removes the session folder
    wait_until(lambda: not context.sessions.path(session).exists(), 60, "the session folder removed")


@pytest.mark.slow
def test_a_file_that_is_not_a_video_gets_a_message_in_the_page(
    server: tuple[str, Any], browser: Any, tmp_path: Path
) -> None:
    url, _ = server
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    browser.get(url)
    upload(browser, "run-upload", notes)
    browser.find_element("css selector", "#run-button").click()
    message = wait_until(lambda: text_of(browser, "#run-message"), what="a message")
    assert "Expected a video file" in message and "notes.txt" in message
    assert "Traceback" not in browser.page_source


@pytest.mark.slow
def test_open_an_inference_output_and_compare_with_ground_truth(
    server: tuple[str, Any], browser: Any, assets: InferAssets, ag_outputs: tuple[Path, Path], tmp_path: Path
) -> None:
    url, _ = server
    folder, predictions = ag_outputs
    browser.get(url)
    open_tab(browser, "Open an inference output")
    type_into(browser, "open-folder", str(folder))
    browser.find_element("css selector", "#open-button").click()
    lines = len((folder / "scene_graphs.jsonl").read_text().splitlines())
    wait_until(lambda: f"{lines} frames" in text_of(browser, "#open-message"), what=f"'{lines} frames' shown")
    wait_until(lambda: browser.find_element("css selector", "#open-graph img"), what="the graph")
    assert any(name in text_of(browser, "#open-table").split() for name in PREDICATES)
    screenshot(browser, tmp_path / "screenshots", "app_open", SCREENSHOTS)

    open_tab(browser, "Compare with ground truth")
    type_into(browser, "cmp-pred", str(predictions))
    browser.find_element("css selector", "#cmp-load").click()
    wait_until(
        lambda: (
            "mR_per_frame@20" in text_of(browser, "#cmp-message") or "GT triplets" in text_of(browser, "#cmp-message")
        ),
        what="the comparison loaded",
    )
    wait_until(lambda: browser.find_element("css selector", "#cmp-recall img"), what="the recall chart")
    marked = ("miss", "hit")  # the table's header is there before the frame's rows: wait for the rows' marks
    gt = wait_until(
        lambda: next((t for t in [text_of(browser, "#cmp-gt-table")] if any(m in t for m in marked)), None),
        what="the GT table's rows",
    )
    assert "miss" in gt or "hit" in gt
    assert "false positive" in text_of(browser, "#cmp-pred-table") or "hit" in text_of(browser, "#cmp-pred-table")
    screenshot(browser, tmp_path / "screenshots", "app_compare", SCREENSHOTS)


# ----------------------------------------------------------------------------------------------- API
@pytest.mark.slow
def test_two_api_clients_get_their_own_results(server: tuple[str, Any], assets: InferAssets, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    from arn_lightning.app.ui import NO_SAMPLE, SAMPLE_NAME

    url, context = server
    first = Client(url, verbose=False, download_files=str(tmp_path / "a"))
    second = Client(url, verbose=False, download_files=str(tmp_path / "b"))
    ckpt = str(assets.checkpoint)
    a = first.predict(handle_file(str(assets.video)), NO_SAMPLE, ckpt, 5, 0.0, api_name="/run_video")
    b = second.predict(None, SAMPLE_NAME, ckpt, 5, 0.0, api_name="/run_video")
    frames = _expected_frames(assets.video)
    assert a[0].startswith(f"**{frames} frames**"), a[0]
    assert b[0].startswith(f"**{logic.SAMPLE_FRAMES} frames**"), b[0]  # the sample, at its own rate
    lines_a = Path(a[2]).read_text().splitlines()
    lines_b = Path(b[2]).read_text().splitlines()
    assert len(lines_a) == frames and len(lines_b) == logic.SAMPLE_FRAMES
    assert lines_a[0].count("synthetic.mp4") and not lines_b[0].count("synthetic.mp4")
    sessions = [s for s in context.sessions.sessions() if (context.sessions.path(s) / "run_1").is_dir()]
    keys = {s: (context.sessions.path(s) / "run_1" / "scene_graphs.jsonl").read_text() for s in sessions}
    assert any("synthetic.mp4" in v for v in keys.values()) and any("sample_moving_box" in v for v in keys.values())


@pytest.mark.slow
def test_paths_outside_what_the_server_was_started_with_get_one_message(
    server: tuple[str, Any], assets: InferAssets, ag_outputs: tuple[Path, Path], tmp_path: Path
) -> None:
    from gradio_client import Client

    from arn_lightning.app.access import REFUSED
    from arn_lightning.app.ui import SAMPLE_NAME

    url, context = server
    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    copy = outside / "copy.ckpt"
    copy.write_bytes(assets.checkpoint.read_bytes())  # a loadable checkpoint, but not the server's
    shutil.copytree(ag_outputs[0], outside / "infer_out")  # a real infer output, but outside --runs and --root
    for path in (copy, outside / "missing.ckpt", "/etc/passwd"):
        answer = client.predict(None, SAMPLE_NAME, str(path), 5, 0.0, api_name="/run_video")
        assert answer[0] == f"**Error:** {REFUSED}", answer[0]
    assert Path(copy).resolve() not in context.predictors._models  # never loaded
    for folder in (outside / "infer_out", outside / "missing", ag_outputs[0] / ".." / ".." / "elsewhere"):
        assert client.predict(str(folder), api_name="/open_output")[0] == f"**Error:** {REFUSED}"
    assert client.predict(str(ag_outputs[0]), api_name="/open_output")[0].startswith("**")  # under --runs: read
    answer = client.predict(
        str(outside), str(ag_outputs[1]), "sgdet", "test", "with", 20, "all", "all", api_name="/compare"
    )
    assert answer[0] == f"**Error:** {REFUSED}"


@pytest.mark.slow
def test_a_login_protects_the_app(assets: InferAssets, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from gradio_client import Client

    with app_server(assets.checkpoint, assets.data_root, tmp_path / "server", auth=[("ana", "s3cret")]) as (url, _):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "config", timeout=30)
        assert refused.value.code == 401
        with pytest.raises(Exception, match="(?i)login|credentials|auth"):
            Client(url, verbose=False, auth=("ana", "wrong"))
        assert (
            "/run_video"
            in Client(url, verbose=False, auth=("ana", "s3cret")).view_api(return_format="dict")["named_endpoints"]
        )


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_every_stop_of_a_real_server_removes_its_temporary_folders(
    stop: signal.Signals, assets: InferAssets, tmp_path: Path
) -> None:
    from app_fixtures import free_port

    port = free_port()
    command = [str(Path(sys.executable).with_name("arn-lightning")), "serve", "--checkpoint", str(assets.checkpoint)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "temporary files in " in first, first
        temp_root = Path(first.split("temporary files in ")[1].split(";")[0])
        assert process.stdout.readline().strip() == "arn-lightning serve: no login (this machine only)"
        wait_until(lambda: (temp_root / "samples").is_dir() and _listening(port), 120, "the server up")
        process.send_signal(stop)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not temp_root.exists()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_serve_help_is_instant_and_imports_no_gradio() -> None:
    code = (
        "import sys\nfrom arn_lightning.commands.serve import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
        "    pass\nassert not [m for m in sys.modules if m.startswith(('gradio', 'torch'))]\n"
    )
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--max-upload-mb" in result.stdout and "default: 200 MB" in result.stdout and "127.0.0.1" in result.stdout
    assert time.monotonic() - start < 10


def test_serve_names_the_extra_when_gradio_is_missing(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from arn_lightning.commands import serve

    monkeypatch.setattr(serve, "gradio_available", lambda: False)
    assert serve.main([]) == 1
    assert "pip install -e '.[app]'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- matching
@pytest.mark.slow
def test_hits_are_what_the_metric_counts(assets: InferAssets, ag_outputs: tuple[Path, Path]) -> None:
    from arn_lightning.metrics.functional import RecallConfig, frame_hits
    from arn_lightning.metrics.predictions import prediction_from_ground_truth

    comparison = logic.load_comparison(assets.data_root, ag_outputs[1])
    assert comparison.frames
    for key in comparison.frames:
        target = comparison.targets[key]
        for prediction in (comparison.predictions[key], prediction_from_ground_truth(target)):
            for constraint in ("with", "no"):
                pred_rows, gt_rows, hits = logic.compare_frame(prediction, target, constraint, 20)
                counted = frame_hits([prediction], [target], RecallConfig(constraints=(constraint,), k_values=(20,)))
                assert hits == int(counted.hits.sum()) == sum(r[-1] == logic.HIT for r in gt_rows)
                assert len(gt_rows) == int(counted.gt_counts.sum())
                assert (hits > 0) == any(r[-1] == logic.HIT for r in pred_rows)
        oracle = logic.compare_frame(prediction_from_ground_truth(target), target, "no", 100)
        assert all(r[-1] == logic.HIT for r in oracle[1])  # the ground truth as prediction recalls everything


def test_only_complete_lines_are_read(tmp_path: Path) -> None:
    lines = tmp_path / "scene_graphs.jsonl"
    lines.write_text('{"index": 0}\n{"index": 1}\n{"index": 2, "trip')
    assert [r["index"] for r in logic.read_complete_records(lines)] == [0, 1]
    with pytest.raises(logic.AppInputError, match="line 2"):
        lines.write_text('{"index": 0}\nnot json\n')
        logic.read_complete_records(lines)
