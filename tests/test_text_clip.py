"""CLIP loading: the tiny tower, weights resolution from the local caches, offline failure and downloads that never
hang (arn_lightning.text.clip, arn_lightning.weights.clip)."""

import time
from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest

from arn_lightning.text.clip import register_tiny_clip, resolve_weights
from arn_lightning.text.config import ClipConfig
from arn_lightning.text.embeddings import text_embeddings
from arn_lightning.weights.clip import ClipWeightsUnavailable, download_tag, host_reachable
from arn_lightning.weights.download import WeightsUnavailable
from clip_fixtures import CATEGORIES
from net_fixtures import PROXY_VARS, FakeHub, FileServer, closed_port_url

NO_HANG_S = 30.0


def test_register_tiny_clip_is_idempotent_and_refuses_a_taken_name():
    assert register_tiny_clip() == register_tiny_clip() == "arn-tiny-clip"
    assert open_clip.get_model_config("arn-tiny-clip")["embed_dim"] == 16
    with pytest.raises(ValueError, match="another config"):
        register_tiny_clip("ViT-B-32")


@pytest.fixture
def network(monkeypatch):
    """Downloads allowed (conftest sets HF_HUB_OFFLINE=1), no proxy variables, no ARN_OFFLINE."""
    for name in PROXY_VARS + ("ARN_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    # conftest's HF_HUB_OFFLINE=1 was frozen into huggingface_hub at its import; an online process has False
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.mark.parametrize("switch", ["HF_HUB_OFFLINE", "ARN_OFFLINE"])
def test_openai_offline_without_cache_fails_at_once(tmp_path, monkeypatch, network, silent, switch):
    monkeypatch.setenv("HF_ENDPOINT", silent.url)  # a connection would be seen (and hang without the timeouts)
    monkeypatch.setenv(switch, "1")
    cfg = ClipConfig(weights_dir=str(tmp_path / "weights"), cache_dir=str(tmp_path / "cache"))
    start = time.monotonic()
    with pytest.raises(ClipWeightsUnavailable, match=f"{switch} is set.*local\\s+checkpoint file"):
        text_embeddings(cfg, None, CATEGORIES)
    assert time.monotonic() - start < 5.0
    assert silent.settle() == 0
    assert not (tmp_path / "cache").exists()  # nothing cached for a failure


def test_unreachable_hub_fails_at_once(tmp_path, monkeypatch, network):
    endpoint = closed_port_url()  # connections refused at once
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(ClipWeightsUnavailable, match=f"{endpoint} is unreachable within 3.0 s"):
        resolve_weights(ClipConfig(weights_dir=str(tmp_path)))


def test_huggingface_hub_imported_offline_is_reported_without_connection(tmp_path, monkeypatch, network, silent):
    monkeypatch.setenv("HF_ENDPOINT", silent.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as read at its import
    with pytest.raises(ClipWeightsUnavailable, match="huggingface_hub is in offline mode"):
        resolve_weights(ClipConfig(weights_dir=str(tmp_path), network_timeout_s=1.0))
    assert silent.settle() == 0


def test_a_hub_that_accepts_and_never_answers_fails_in_seconds(tmp_path, monkeypatch, network, silent):
    monkeypatch.setenv("HF_ENDPOINT", silent.url)
    start = time.monotonic()
    with pytest.raises(
        ClipWeightsUnavailable,
        match=f"{silent.url}/timm/vit_base_patch32_clip_224.openai/resolve/"
        f"main/open_clip_model.safetensors gave no answer within 1 s",
    ):
        resolve_weights(ClipConfig(weights_dir=str(tmp_path), network_timeout_s=1.0))
    assert time.monotonic() - start < NO_HANG_S
    assert silent.connections >= 1
    assert isinstance(ClipWeightsUnavailable("x"), WeightsUnavailable)


def test_hub_weights_are_downloaded_then_found_in_the_cache_offline(tmp_path, monkeypatch, network):
    with FakeHub({"open_clip_pytorch_model.bin": b"fake clip weights"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        cfg = ClipConfig(weights_dir=str(tmp_path), network_timeout_s=2.0)
        resolved = resolve_weights(cfg)
        # the safetensors variant is asked for first (404 here), then the .bin, as open_clip does
        assert [p.rsplit("/", 1)[-1] for _, p in hub.requests[:2]] == [
            "open_clip_model.safetensors",
            "open_clip_pytorch_model.bin",
        ]
    assert Path(resolved.path).read_bytes() == b"fake clip weights"
    assert Path(resolved.path).parent.name == FakeHub.COMMIT
    monkeypatch.setenv("ARN_OFFLINE", "1")  # the hub is gone: the cache answers
    assert resolve_weights(cfg).path == resolved.path


def test_reachability_probe_goes_through_the_configured_proxy(monkeypatch, network, silent):
    monkeypatch.setenv("HTTPS_PROXY", silent.url)
    assert host_reachable("https://huggingface.co", 2.0)  # the proxy accepts; the host itself is never contacted
    assert silent.settle() >= 1
    monkeypatch.setenv("NO_PROXY", "huggingface.co")
    monkeypatch.setenv("HTTPS_PROXY", closed_port_url())
    assert not host_reachable("https://example.invalid", 2.0)  # via the refusing proxy


def test_url_weights_are_downloaded_with_a_timeout(tmp_path, network, silent):
    served = tmp_path / "served"
    served.mkdir()
    (served / "tiny.pt").write_bytes(b"tiny weights")
    cfg = ClipConfig(weights_dir=str(tmp_path / "weights"), network_timeout_s=1.0)
    with FileServer(served) as server:
        path = download_tag(cfg, {"url": f"{server.url}/tiny.pt"})
    assert Path(path) == tmp_path / "weights" / "tiny.pt" and Path(path).read_bytes() == b"tiny weights"
    start = time.monotonic()
    with pytest.raises(ClipWeightsUnavailable, match="gave no answer within 1 s.*under the file name other.pt"):
        download_tag(cfg, {"url": f"{silent.url}/other.pt"})
    assert time.monotonic() - start < NO_HANG_S


def test_tag_weights_are_found_in_the_local_hub_cache(tmp_path):
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    weights = repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    resolved = resolve_weights(ClipConfig(weights_dir=str(tmp_path)))
    assert resolved.path == str(weights)
    assert resolved.quick_gelu is True  # the OpenAI tag was trained with QuickGELU


def test_bad_model_or_tag_is_rejected(tiny_clip):
    with pytest.raises(ValueError, match="open_clip architecture"):
        resolve_weights(ClipConfig(clip_model="no-such-model"))
    with pytest.raises(ValueError, match="pretrained tag of ViT-B-32"):
        resolve_weights(ClipConfig(clip_pretrained="not-a-tag-nor-a-file"))
    with pytest.raises(ValueError, match="image_resize"):
        ClipConfig(image_resize="stretch")
