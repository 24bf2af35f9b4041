"""Test-wide settings (no network, no W&B upload, small thread counts) and the fixtures shared by several test files.

Fixtures used by more than one test file live here, so that a test requests them by name instead of importing them:

==============================  =========  ======================================================================
fixture                         scope      what
==============================  =========  ======================================================================
``one_thread``                  function   torch on one CPU thread for the test
``standard_root``               function   the hand-written AG root of ``ag_fixtures`` (annotations only) at
                                           ``tmp_path / "ag"``
``standard_root_with_frames``   function   the same root with its frame PNGs
``assets``                      session    synthetic AG root, tiny checkpoint and mp4 of the inference tests
``predictor``                   module     ``load_model(assets.checkpoint)``
``train_root``                  session    the synthetic AG of the training-system tests
``silent``                      function   a TCP server on 127.0.0.1 that accepts and never answers
``tiny_clip``                   function   the tiny random CLIP config, caches under ``tmp_path / "cache"``
==============================  =========  ======================================================================

Plain helpers (functions, classes, constants) are imported from the helper modules beside this file, one per topic,
all named ``<topic>_fixtures.py``:

- ``ag_fixtures``: hand-written Action Genome roots in the release format and their hand-counted expectations;
- ``clip_fixtures``: the tiny random CLIP config and the triplet categories of the CLIP tests;
- ``infer_fixtures``: hand-made predictions, videos written with plain PyAV, the inference assets;
- ``net_fixtures``: local network stand-ins (silent server, file server, fake Hugging Face hub);
- ``output_fixtures``: hand-made model outputs (class logits) for the matcher and postprocess tests;
- ``train_fixtures``: the tiny LightningCLI config and state-dict comparisons of the training tests;
- ``resume_fixtures``: callbacks that stop a training run (importable by a subprocess: ``class_path``).

The helper modules are imported lazily inside the fixtures, so that collecting a single light test file does not pay
for PyAV or Lightning.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING

import pytest  # noqa: E402
import torch  # noqa: E402

# The parsed-annotation cache (arn_lightning.data.ag) of this session: a temporary folder, not the user's cache.
_ANNOTATION_CACHE = tempfile.mkdtemp(prefix="arn-annotation-cache-")
os.environ.setdefault("ARN_ANNOTATION_CACHE", _ANNOTATION_CACHE)
atexit.register(shutil.rmtree, _ANNOTATION_CACHE, True)

if TYPE_CHECKING:
    from arn_lightning.inference.api import SceneGraphPredictor
    from arn_lightning.text.config import ClipConfig
    from infer_fixtures import InferAssets
    from net_fixtures import SilentServer

# One thread: the tiny test models are dominated by threading overhead, and CI shares its two cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread for the test, restored afterwards (tiny matrices: thread synchronisation costs more
    than it saves, 8x slower with 2 threads on a busy 2-core machine)."""
    from infer_fixtures import torch_threads

    with torch_threads(1):
        yield


# ----------------------------------------------------------------------------------------------- Action Genome roots
@pytest.fixture
def standard_root(tmp_path: Path) -> Path:
    """The standard hand-written AG root (``ag_fixtures`` module docstring) at ``tmp_path / "ag"``, annotations and
    class files only (no frame PNGs); a fresh copy per test, which may change it."""
    from ag_fixtures import write_standard_root

    return write_standard_root(tmp_path / "ag", frames=False)


@pytest.fixture
def standard_root_with_frames(tmp_path: Path) -> Path:
    """:func:`standard_root` with one PNG per annotated frame (``ag_fixtures.write_frame``)."""
    from ag_fixtures import write_standard_root

    return write_standard_root(tmp_path / "ag")


# ----------------------------------------------------------------------------------------------- inference
@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> InferAssets:
    """The shared synthetic AG root, tiny checkpoint and mp4 of the inference and notebook tests (built once)."""
    from infer_fixtures import build_assets

    return build_assets(tmp_path_factory.getbasetemp() / "infer_assets")


@pytest.fixture(scope="module")
def predictor(assets: InferAssets) -> SceneGraphPredictor:
    """The tiny checkpoint of :func:`assets`, loaded once per test module."""
    from arn_lightning.inference.api import load_model

    return load_model(assets.checkpoint)


# ----------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="session")
def train_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic Action Genome (8 videos x 4 frames, 160x120), generated once per session."""
    from arn_lightning.data.synth import generate

    root = tmp_path_factory.getbasetemp() / "train_ag"
    if not root.exists():
        generate(root, videos=8, frames=4, size=(160, 120), seed=3)
    return root


# ----------------------------------------------------------------------------------------------- network
@pytest.fixture
def silent() -> Iterator[SilentServer]:
    """A server on 127.0.0.1 that accepts every connection and never answers (``net_fixtures.SilentServer``)."""
    from net_fixtures import SilentServer

    with SilentServer() as server:
        yield server


# ----------------------------------------------------------------------------------------------- CLIP
@pytest.fixture
def tiny_clip(tmp_path: Path) -> ClipConfig:
    """The tiny random CLIP tower (``clip_fixtures.tiny_clip_config``) with its caches under ``tmp_path / "cache"``."""
    from clip_fixtures import tiny_clip_config

    return tiny_clip_config(tmp_path)
