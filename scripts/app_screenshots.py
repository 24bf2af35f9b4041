"""The README's and docs/app.md's screenshots of the web app (``docs/images/app_run.png``, ``app_open.png``,
``app_compare.png``), taken of a real ``arn-lightning serve`` with a trained model (docs/app.md, "How it is tested").

Example (the demo's trained model, as the images in docs/images were made)::

    python scripts/app_screenshots.py \\
        --checkpoint demo_output/train/synthetic_demo/version_0/checkpoints/epoch003-R20_0.7425.ckpt \\
        --root demo_output/data --predictions demo_output/predictions_test.jsonl --work /tmp/arn-demo --out docs/images

It lays out ``--work`` as a user's project folder (``checkpoints/`` and ``data`` linked to the given checkpoint and
root, ``runs/`` with a copy of the prediction file and an ``arn-lightning infer --save-frames`` output of the first
test video, ``videos/`` with the second test video's frames as an mp4 to upload), starts ``arn-lightning serve`` in
that folder with relative paths on a free port of 127.0.0.1, and drives Debian's headless Chromium through Selenium
with the helpers of the app tests (``tests/app_fixtures.py``): Run (the mp4 uploaded and run), Open (the infer
output) and Compare (the prediction file against the root). Each PNG is written atomically into ``--out``. The server
is stopped with SIGTERM. Needs the ``app`` and ``test`` extras and ``make browser``; nothing is downloaded.
Exit codes: 0 written, 1 a step failed (the message says which).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT / "tests"))  # the app tests' browser helpers: one home for driving the page

from app_fixtures import chrome, free_port, open_tab, text_of, type_into, upload, wait_until  # noqa: E402
from arn_lightning.atomic import atomic_write_bytes  # noqa: E402

#: Seconds the server may take to answer its first request (imports and the model's sample video included).
START_TIMEOUT_S = 180
CLI = [sys.executable, "-m", "arn_lightning.cli"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help`` lists it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained checkpoint (or a model folder)")
    parser.add_argument("--root", type=Path, required=True, help="its Action Genome root (frames/ and annotations/)")
    parser.add_argument("--predictions", type=Path, required=True, help="its predictions_test.jsonl")
    parser.add_argument("--work", type=Path, default=Path("/tmp/arn-demo"), help="the folder the page shows")
    parser.add_argument("--out", type=Path, default=CHECKOUT / "docs" / "images", help="where the PNGs go")
    return parser.parse_args(argv)


def test_videos(predictions: Path) -> list[str]:
    """The videos of a prediction file, in file order (``S0005.mp4``, ...)."""
    videos: dict[str, None] = {}
    with predictions.open() as lines:
        for line in lines:
            if line.strip():
                videos.setdefault(json.loads(line)["frame"].split("/")[0], None)
    if len(videos) < 2:
        raise ValueError(f"Expected frames of at least two videos in {predictions} but got {list(videos)}")
    return list(videos)


def frames_to_mp4(folder: Path, path: Path) -> Path:
    """The images of an AG frame folder as an mp4 at the app's sampling rate (every frame is kept by the Run tab)."""
    from arn_lightning.app.logic import APP_FPS
    from arn_lightning.video.files import VideoWriter, open_frames

    writer = VideoWriter(path, APP_FPS)
    try:
        for frame in open_frames(folder, APP_FPS):
            writer.write(frame.image)
    finally:
        writer.close()
    return path


def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """Lay out ``--work`` (module docstring); returns the video to upload and the infer
    output (relative to ``--work``)."""
    work = args.work
    if (work / ".arn-screenshots").is_file():  # made by an earlier run of this script
        shutil.rmtree(work)
    if work.exists():
        raise ValueError(f"Expected --work {work} to be absent or made by this script but it holds other files")
    for folder in ("checkpoints", "runs", "videos"):
        (work / folder).mkdir(parents=True)
    (work / ".arn-screenshots").touch()
    checkpoint = Path("checkpoints") / args.checkpoint.name
    (work / checkpoint).symlink_to(args.checkpoint.resolve())
    (work / "data").symlink_to(args.root.resolve())
    shutil.copyfile(args.predictions, work / "runs" / "predictions_test.jsonl")
    opened, uploaded = test_videos(args.predictions)[:2]
    video = frames_to_mp4(args.root / "frames" / uploaded, work / "videos" / uploaded)
    output = Path("runs") / Path(opened).stem
    infer = [*CLI, "infer", "--checkpoint", str(checkpoint), "--input", f"data/frames/{opened}"]
    subprocess.run([*infer, "--out", str(output), "--save-frames", "--quiet"], cwd=work, check=True)
    return video, output


@contextmanager
def serving(work: Path, checkpoint: str) -> Iterator[str]:
    """``arn-lightning serve`` in ``work`` on a free port of 127.0.0.1; yields its URL once it answers 200, then
    stops it with SIGTERM."""
    port = free_port()
    command = [*CLI, "serve", "--checkpoint", checkpoint, "--runs", "runs", "--root", "data", "--port", str(port)]
    process = subprocess.Popen(command, cwd=work)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: _answers(url, process), START_TIMEOUT_S, f"{url} to answer 200")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise SystemExit(f"Expected arn-lightning serve to run but it exited with status {process.returncode}")
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def save(driver: Any, out: Path, name: str) -> None:
    """The browser window as ``out/name.png``, written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / f"{name}.png", driver.get_screenshot_as_png())
    print(f"screenshot: {out / name}.png")


def run_tab(driver: Any, video: Path, out: Path) -> None:
    """Upload ``video``, run it with the default checkpoint and wait for the graph and triplets."""
    upload(driver, "run-upload", video)
    driver.find_element("css selector", "#run-button").click()
    wait_until(lambda: " frames" in text_of(driver, "#run-message"), what="the run's frame count")
    wait_until(lambda: driver.find_element("css selector", "#run-graph img"), what="the graph")
    wait_until(lambda: text_of(driver, "#run-table"), what="the triplet table")
    time.sleep(2)  # the annotated video's first frame
    save(driver, out, "app_run")


def open_and_compare(driver: Any, output: Path, out: Path) -> None:
    """The Open tab on the infer output, then the Compare tab on ``runs/predictions_test.jsonl``."""
    open_tab(driver, "Open an inference output")
    type_into(driver, "open-folder", str(output))
    driver.find_element("css selector", "#open-button").click()
    wait_until(lambda: " frames" in text_of(driver, "#open-message"), what="the folder opened")
    wait_until(lambda: driver.find_element("css selector", "#open-graph img"), what="the graph")
    time.sleep(2)
    save(driver, out, "app_open")
    open_tab(driver, "Compare with ground truth")
    type_into(driver, "cmp-pred", "runs/predictions_test.jsonl")
    driver.find_element("css selector", "#cmp-load").click()
    wait_until(lambda: driver.find_element("css selector", "#cmp-recall img"), what="the recall chart")
    wait_until(lambda: any(m in text_of(driver, "#cmp-gt-table") for m in ("hit", "miss")), what="the GT rows")
    time.sleep(2)
    save(driver, out, "app_compare")


def main(argv: list[str] | None = None) -> int:
    """Lay out ``--work``, serve it, take the three screenshots; returns the exit code."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    video, output = prepare(args)
    checkpoint = str(Path("checkpoints") / args.checkpoint.name)
    out = args.out.resolve()
    with serving(args.work, checkpoint) as url:
        driver = chrome(args.work / "downloads")
        try:
            driver.get(url)
            run_tab(driver, video.resolve(), out)
            open_and_compare(driver, output, out)
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
