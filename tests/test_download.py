"""Weight downloads: offline switches, timeouts against a server that never answers, atomic files, hash checks.

Everything runs against servers on 127.0.0.1 (``net_fixtures``, and the ``silent`` fixture of ``conftest.py``); the
times measured are generous bounds that prove the absence of a hang, not performance assertions.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision

from arn_lightning.models.backbone import Backbone
from arn_lightning.weights import download
from arn_lightning.weights.download import (
    DEFAULT_DEADLINE_S,
    DEFAULT_TIMEOUT_S,
    WeightsUnavailable,
    download_deadline_s,
    download_timeout_s,
    fetch_weights,
    hash_prefix,
    offline_reason,
    sweep_stale_downloads,
    weights_url,
)
from arn_lightning.weights.resnet import imagenet_weights_file, load_backbone_weights
from net_fixtures import PROXY_VARS, FileServer, TrickleServer

#: A hang would last minutes; failing within this bound proves there is none.
NO_HANG_S = 30.0


@pytest.fixture(autouse=True)
def online(monkeypatch, tmp_path):
    """Downloads allowed (conftest sets HF_HUB_OFFLINE=1), no proxy, no mirror, torch hub cache in tmp_path."""
    for name in PROXY_VARS + ("ARN_OFFLINE", "ARN_WEIGHTS_URL", "ARN_DOWNLOAD_TIMEOUT", "ARN_DOWNLOAD_DEADLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _hashed_file(folder, stem, payload: bytes):
    """Write ``payload`` as ``<stem>-<sha256[:8]>.pth`` (torch.hub's naming) and return its name."""
    name = f"{stem}-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(payload)
    return name


# ------------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    "environ, reason",
    [
        ({}, None),
        ({"ARN_OFFLINE": "1"}, "ARN_OFFLINE is set"),
        ({"ARN_OFFLINE": "True"}, "ARN_OFFLINE is set"),
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ({"ARN_OFFLINE": "0", "HF_HUB_OFFLINE": "0"}, None),
        ({"ARN_OFFLINE": "", "HF_HUB_OFFLINE": "yes"}, "HF_HUB_OFFLINE is set"),
    ],
)
def test_offline_reason_reads_both_switches(environ, reason):
    assert offline_reason(environ) == reason
    assert download.is_offline(environ) is (reason is not None)


def test_a_malformed_offline_switch_is_an_error():
    with pytest.raises(ValueError, match="Expected ARN_OFFLINE to be one of .* but got 'maybe'"):
        offline_reason({"ARN_OFFLINE": "maybe"})


def test_download_timeout_argument_then_environment_then_default():
    assert download_timeout_s(2.5, {"ARN_DOWNLOAD_TIMEOUT": "7"}) == 2.5
    assert download_timeout_s(None, {"ARN_DOWNLOAD_TIMEOUT": "7"}) == 7.0
    assert download_timeout_s(None, {}) == DEFAULT_TIMEOUT_S == 10.0
    with pytest.raises(ValueError, match="Expected ARN_DOWNLOAD_TIMEOUT to be a number of seconds but got 'soon'"):
        download_timeout_s(None, {"ARN_DOWNLOAD_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="Expected ARN_DOWNLOAD_TIMEOUT to be a finite number of seconds > 0"):
        download_timeout_s(None, {"ARN_DOWNLOAD_TIMEOUT": "0"})
    with pytest.raises(ValueError, match="Expected timeout_s to be a finite number"):
        download_timeout_s(float("inf"), {})


def test_hash_prefix_follows_torch_hub_file_names():
    assert hash_prefix("resnet50-0676ba61.pth") == "0676ba61"
    assert hash_prefix("resnet18-f37072fd.pth") == "f37072fd"
    assert hash_prefix("detr-r50-e632da11.pth") == "e632da11"
    assert hash_prefix("ViT-B-32.pt") is None  # "-32." is no hash: fewer than 8 hex digits
    assert hash_prefix("open_clip_pytorch_model.bin") is None


def test_mirror_replaces_the_official_url():
    official = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert weights_url(official, "resnet50-0676ba61.pth", {}) == official
    for base in ("http://mirror.local/w", "http://mirror.local/w/"):
        assert (
            weights_url(official, "resnet50-0676ba61.pth", {"ARN_WEIGHTS_URL": base})
            == "http://mirror.local/w/resnet50-0676ba61.pth"
        )


# ------------------------------------------------------------------------------------------------ downloads
def test_fetch_downloads_atomically_checks_the_hash_and_then_needs_no_network(tmp_path):
    payload = b"weights" * 1000
    name = _hashed_file(tmp_path / "served", "tiny", payload)
    cache = tmp_path / "cache"
    with FileServer(tmp_path / "served") as server:
        path = fetch_weights(f"{server.url}/{name}", cache)
    assert path == cache / name and path.read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == [name]  # no temporary file left
    # the server is gone: the file on disk answers, even offline
    assert fetch_weights(f"{server.url}/{name}", cache) == path


def test_hash_mismatch_leaves_no_file(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "tiny-0123abcd.pth").write_bytes(b"not the announced bytes")
    cache = tmp_path / "cache"
    with FileServer(served) as server:
        with pytest.raises(WeightsUnavailable, match="Expected the sha256 of .* to start with 0123abcd") as info:
            fetch_weights(f"{server.url}/tiny-0123abcd.pth", cache)
        assert f"in the folder {cache} under the file name tiny-0123abcd.pth" in str(info.value)
        assert list(cache.iterdir()) == []
        # without the hash check the same bytes are accepted
        assert fetch_weights(f"{server.url}/tiny-0123abcd.pth", cache, check_hash=False).is_file()


def test_http_error_names_the_file_and_the_folder(tmp_path):
    (tmp_path / "served").mkdir()
    with FileServer(tmp_path / "served") as server:
        with pytest.raises(WeightsUnavailable, match="HTTPError: HTTP Error 404") as info:
            fetch_weights(f"{server.url}/absent-0123abcd.pth", tmp_path / "cache", what="the test weights")
    message = str(info.value)
    assert message.startswith(f"Expected the test weights in {tmp_path / 'cache' / 'absent-0123abcd.pth'}")
    assert f"place it in the folder {tmp_path / 'cache'} under the file name absent-0123abcd.pth" in message


def test_a_silent_server_fails_after_the_timeout(tmp_path, silent):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="gave no answer within 1 s") as info:
        fetch_weights(f"{silent.url}/model-0123abcd.pth", tmp_path / "cache", timeout_s=1.0)
    assert time.monotonic() - start < NO_HANG_S
    assert silent.connections >= 1  # it did connect, and the server never answered
    assert f"in the folder {tmp_path / 'cache'} under the file name model-0123abcd.pth" in str(info.value)
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("switch", ["ARN_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_fails_at_once_without_any_connection(tmp_path, silent, monkeypatch, switch):
    monkeypatch.setenv(switch, "1")
    monkeypatch.setenv("ARN_DOWNLOAD_TIMEOUT", "1")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match=f"{switch} is set \\(no download attempted\\)") as info:
        fetch_weights(f"{silent.url}/model-0123abcd.pth", tmp_path / "cache")
    assert time.monotonic() - start < NO_HANG_S
    assert silent.settle() == 0
    assert f"{tmp_path / 'cache'} under the file name model-0123abcd.pth" in str(info.value)


# ------------------------------------------------------------------------------------------------ backbone
def test_imagenet_file_is_torchvisions_hub_cache_path(tmp_path):
    url, path = imagenet_weights_file("resnet50")
    assert url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert path.parent == Path(torch.hub.get_dir()) / "checkpoints"


def test_imagenet_backbone_through_a_silent_mirror_fails_in_seconds(tmp_path, silent, monkeypatch):
    monkeypatch.setenv("ARN_WEIGHTS_URL", silent.url)
    monkeypatch.setenv("ARN_DOWNLOAD_TIMEOUT", "1")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="the ImageNet weights of resnet18") as info:
        load_backbone_weights(Backbone("resnet18", 32, True, 2), "imagenet")
    assert time.monotonic() - start < NO_HANG_S
    assert silent.connections >= 1
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert f"place it in the folder {folder} under the file name resnet18-f37072fd.pth" in str(info.value)
    assert f"{silent.url}/resnet18-f37072fd.pth gave no answer within 1 s" in str(info.value)


def test_imagenet_backbone_behind_a_silent_proxy_fails_in_seconds(tmp_path, silent, monkeypatch):
    # the official https URL, through a proxy that accepts and never answers (the reported 90 s hang)
    monkeypatch.setenv("HTTPS_PROXY", silent.url)
    monkeypatch.setenv("ARN_DOWNLOAD_TIMEOUT", "1")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="resnet18-f37072fd.pth gave no answer within 1 s"):
        load_backbone_weights(Backbone("resnet18", 32, True, 2), "imagenet")
    assert time.monotonic() - start < NO_HANG_S
    assert silent.connections >= 1


def test_imagenet_backbone_offline_makes_no_connection(tmp_path, silent, monkeypatch):
    monkeypatch.setenv("ARN_WEIGHTS_URL", silent.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE is set") as info:
        load_backbone_weights(Backbone("resnet50", 32, True, 2), "imagenet")
    assert silent.settle() == 0
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in str(info.value)
    assert "resnet50-0676ba61.pth" in str(info.value) and "backbone_weights" in str(info.value)


def test_imagenet_backbone_downloads_from_a_mirror_and_checks_the_hash(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), served / "resnet18-f37072fd.pth")  # not the real bytes
    monkeypatch.setenv("ARN_DOWNLOAD_TIMEOUT", "5")
    with FileServer(served) as server:
        monkeypatch.setenv("ARN_WEIGHTS_URL", server.url)
        with pytest.raises(WeightsUnavailable, match="to start with f37072fd"):
            load_backbone_weights(Backbone("resnet18", 32, True, 2), "imagenet")
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()


# ----------------------------------------------------------------------------------- deadline, temporary files
def test_download_deadline_argument_then_environment_then_default():
    assert download_deadline_s(3.0, {"ARN_DOWNLOAD_DEADLINE": "7"}) == 3.0
    assert download_deadline_s(None, {"ARN_DOWNLOAD_DEADLINE": "7"}) == 7.0
    assert download_deadline_s(None, {}) == DEFAULT_DEADLINE_S == 1800.0
    with pytest.raises(ValueError, match="Expected ARN_DOWNLOAD_DEADLINE to be a finite number of seconds > 0"):
        download_deadline_s(None, {"ARN_DOWNLOAD_DEADLINE": "-1"})


def test_a_server_sending_one_byte_every_half_second_fails_at_the_deadline(tmp_path, monkeypatch):
    """Each read gets a byte within the 5 s read timeout, so only the deadline stops the transfer."""
    monkeypatch.setenv("ARN_DOWNLOAD_DEADLINE", "2")
    cache = tmp_path / "cache"
    with TrickleServer(interval_s=0.5) as server:
        start = time.monotonic()
        with pytest.raises(WeightsUnavailable, match=r"within the deadline of 2 s \(ARN_DOWNLOAD_DEADLINE\)") as info:
            fetch_weights(f"{server.url}/slow-0123abcd.pth", cache, timeout_s=5.0)
        elapsed = time.monotonic() - start
    assert 2.0 <= elapsed < 2.0 + 5.0  # the deadline, plus at most one read
    assert "of 1000000 bytes by then" in str(info.value)
    assert f"in the folder {cache} under the file name slow-0123abcd.pth" in str(info.value)
    assert list(cache.iterdir()) == []


def _download_in_a_subprocess(url: str, cache: Path) -> subprocess.Popen:
    code = f"from arn_lightning.weights.download import fetch_weights; fetch_weights({url!r}, {str(cache)!r})"
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "ARN_DOWNLOAD_DEADLINE": "120"})


def _wait_for_temporary(cache: Path, process: subprocess.Popen) -> Path:
    for _ in range(600):
        found = list(cache.glob(".*.tmp")) if cache.is_dir() else []
        if found:
            return found[0]
        assert process.poll() is None, "the download ended before its temporary file appeared"
        time.sleep(0.05)
    raise AssertionError(f"no temporary file appeared in {cache}")


def test_a_download_killed_by_sigterm_leaves_no_temporary_file(tmp_path):
    cache = tmp_path / "cache"
    with TrickleServer() as server:
        process = _download_in_a_subprocess(f"{server.url}/big-0123abcd.pth", cache)
        try:
            tmp = _wait_for_temporary(cache, process)
            assert f".pid{process.pid}." in tmp.name
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == -signal.SIGTERM  # ends as SIGTERM ends it, after the clean-up
        finally:
            process.kill()
    assert list(cache.iterdir()) == []


def test_the_temporary_file_of_a_sigkilled_download_is_swept_by_the_next_one(tmp_path):
    cache = tmp_path / "cache"
    with TrickleServer() as server:
        process = _download_in_a_subprocess(f"{server.url}/big-0123abcd.pth", cache)
        try:
            stale = _wait_for_temporary(cache, process)
        finally:
            process.kill()
            process.wait(timeout=30)
    assert stale.is_file()  # SIGKILL: no handler runs
    running = cache / f".other-0123abcd.pth.pid{os.getpid()}.abc.tmp"  # a download of a live process
    running.write_bytes(b"partial")
    payload = b"weights" * 100
    name = _hashed_file(tmp_path / "served", "tiny", payload)
    with FileServer(tmp_path / "served") as server:
        assert fetch_weights(f"{server.url}/{name}", cache).read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == sorted([name, running.name])
    assert sweep_stale_downloads(cache) == []


def test_the_signal_clean_up_replaces_only_default_handlers(tmp_path):
    """A handler the program installed (a training run's SIGTERM) stays in place during a download; the default one
    is replaced for the download and restored after it."""
    target = tmp_path / "w.pth"
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with download._temporary_download(target) as tmp:
            assert callable(signal.getsignal(signal.SIGTERM)) and tmp.is_file()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        tmp.unlink()  # a clean exit leaves it to the caller, who commits it

        def own(signum, frame):
            return None

        signal.signal(signal.SIGTERM, own)
        with download._temporary_download(target):
            assert signal.getsignal(signal.SIGTERM) is own
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)
