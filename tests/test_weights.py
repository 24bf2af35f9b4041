"""Named weight files (``arn_lightning.weights.registry``, ``arn-lightning weights``), offline except for a 127.0.0.1
mirror.

Every test registers its own entry (a file the test writes, with its real sha256) through
:func:`arn_lightning.weights.registry.registered`; the cache folder is ``tmp_path`` through ``ARN_WEIGHTS_DIR``.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import open_clip
import pytest
import torch
import torchvision

from arn_lightning.commands import weights as weights_command
from arn_lightning.models.arn import ARN, ARNConfig
from arn_lightning.text.clip import _weights_source, model_identity, registry_tag_cfg
from arn_lightning.text.config import ClipConfig
from arn_lightning.weights import registry as weights
from arn_lightning.weights.detr import (
    DetrLoadReport,
    format_detr_report,
    load_detr_checkpoint,
    resolve_detr_checkpoint,
)
from arn_lightning.weights.download import WeightsUnavailable
from arn_lightning.weights.registry import WeightsEntry, WeightsMismatch
from net_fixtures import PROXY_VARS, FileServer

CATEGORIES = {"attention": [[0, 2]], "spatial": [[3, 2]], "contacting": [[9, 2]]}
#: ARN prefix -> DETR prefix (the inverse of the mapping, written out independently of the code under test).
INVERSE_PREFIXES = {
    "backbone.body.": "backbone.0.body.",
    "input_proj.": "input_proj.",
    "encoder.layers.": "transformer.encoder.layers.",
    "entity.decoder.layers.": "transformer.decoder.layers.",
    "entity.decoder.norm.": "transformer.decoder.norm.",
    "entity.subject_pos.weight": "query_embed.weight",
    "entity.sub_box_head.": "bbox_embed.",
}
#: Bound proving that an absent file fails without waiting on any network.
FAST_S = 5.0


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Offline, no mirror, no proxy; the weights folder is tmp_path/weights."""
    for name in PROXY_VARS + ("ARN_WEIGHTS_URL", "ARN_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARN_OFFLINE", "1")
    monkeypatch.setenv("ARN_WEIGHTS_DIR", str(tmp_path / "weights"))


def tiny_config() -> ARNConfig:
    return ARNConfig(
        backbone="resnet18",
        hidden_dim=32,
        nheads=2,
        ffn_dim=64,
        enc_layers=1,
        entity_layers=1,
        predicate_layers=1,
        pap=False,
        ha=False,
        num_queries=4,
        clip_embed_dim=16,
        temporal_layers=0,
    )


def detr_state(model: ARN) -> dict[str, torch.Tensor]:
    """A DETR-format state dict for ``model`` (values + 1, distinguishable), plus DETR's class head."""
    state = {}
    for key, value in model.state_dict().items():
        for ours, theirs in INVERSE_PREFIXES.items():
            if key.startswith(ours):
                state[theirs + key[len(ours) :]] = value.clone() + 1.0
    layer0 = {k: v for k, v in state.items() if k.startswith("transformer.decoder.layers.0.")}
    for i in range(1, 6):  # DETR's 6 decoder layers: the ones after the entity decoder's go to the predicate branches
        state.update({k.replace("layers.0.", f"layers.{i}."): v + i for k, v in layer0.items()})
    state["class_embed.weight"], state["class_embed.bias"] = torch.randn(92, 32), torch.randn(92)
    return state


def entry_for(file: Path, name: str = "test-weights", setting: str = "detr_checkpoint", **kw) -> WeightsEntry:
    """A registry entry for ``file`` with its real full sha256 (URL: a host that is never contacted offline)."""
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return WeightsEntry(
        name=name,
        file_name=file.name,
        urls=(f"http://127.0.0.1:9/{file.name}",),
        sha256=kw.pop("sha256", digest),
        description="a test file",
        setting=setting,
        used_by="tests",
        hash_source="computed by the test",
        **kw,
    )


def write(folder: Path, name: str, payload: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(payload)
    return folder / name


# ------------------------------------------------------------------------------------------------- registry
def test_the_paper_entries_match_their_sources():
    detr, resnet, clip = (weights.get_entry(n) for n in ("detr-r50-coco", "resnet50-imagenet", "clip-vit-b32-openai"))
    assert (detr.file_name, detr.hash_kind, detr.sha256) == ("detr-r50-e632da11.pth", "sha256-prefix", "e632da11")
    assert resnet.urls == (torchvision.models.get_model_weights("resnet50").IMAGENET1K_V1.url,)
    assert resnet.sha256 == "0676ba61" and resnet.hash_kind == "sha256-prefix"
    openai_url = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["url"]
    assert clip.urls == (openai_url,) and clip.hash_kind == "sha256" and openai_url.split("/")[-2] == clip.sha256
    assert registry_tag_cfg("ViT-B-32", "clip-vit-b32-openai")["quick_gelu"] is True


def test_default_folder_is_torch_hubs(monkeypatch, tmp_path):
    monkeypatch.delenv("ARN_WEIGHTS_DIR")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert weights.weights_dir() == tmp_path / "th" / "hub" / "checkpoints"
    assert weights.weights_dir(tmp_path / "x") == tmp_path / "x"


def test_registered_is_scoped_and_names_are_unique(tmp_path):
    entry = entry_for(write(tmp_path, "a.bin", b"a"))
    with weights.registered(entry):
        assert weights.is_registered("test-weights")
        with pytest.raises(ValueError, match="is taken"):
            weights.register(entry_for(write(tmp_path, "b.bin", b"b")))
    assert not weights.is_registered("test-weights") and "detr-r50-coco" in weights.names()
    with pytest.raises(weights.UnknownWeights, match="detr-r50-coco"):
        weights.get_entry("nope")


# ------------------------------------------------------------------------------------------ resolve / verify
def test_a_file_placed_by_hand_resolves_without_network(tmp_path):
    file = write(tmp_path / "weights", "thing-1234abcd.pth", os.urandom(3000))
    with weights.registered(entry_for(file)):
        assert weights.resolve("test-weights") == file
        assert weights.verify("test-weights").ok


def test_a_wrong_checksum_is_refused_and_the_file_kept(tmp_path):
    file = write(tmp_path / "weights", "thing.pth", b"not the published bytes")
    with weights.registered(entry_for(file, sha256="ab" * 32)):
        with pytest.raises(WeightsMismatch) as info:
            weights.resolve("test-weights")
    message = str(info.value)
    assert str(file) in message and "ab" * 32 in message and hashlib.sha256(file.read_bytes()).hexdigest() in message
    assert "left in place" in message and "weights fetch test-weights" in message
    assert file.read_bytes() == b"not the published bytes"


def test_an_absent_file_fails_at_once_naming_file_checksum_url_and_folder(tmp_path):
    file = tmp_path / "src" / "missing-9f9f9f9f.pth"
    write(file.parent, file.name, b"x")
    entry = entry_for(file)
    file.unlink()
    with weights.registered(entry):
        start = time.monotonic()
        with pytest.raises(WeightsUnavailable) as info:
            weights.resolve("test-weights")
        assert time.monotonic() - start < FAST_S
    message = str(info.value)
    for part in (entry.file_name, entry.sha256, entry.urls[0], str(tmp_path / "weights"), "ARN_OFFLINE is set"):
        assert part in message, part
    assert not (tmp_path / "weights").exists()  # nothing created offline


def test_verify_remembers_and_notices_changes(tmp_path):
    file = write(tmp_path / "weights", "big.pth", b"1" * 100_000)
    with weights.registered(entry_for(file)):
        first, second = weights.verify("test-weights"), weights.verify("test-weights")
        assert first.ok and not first.cached and second.ok and second.cached
        assert (tmp_path / "weights" / weights.VERIFY_CACHE_NAME).is_file()
        file.write_bytes(b"2" * 100_000)  # same size; new mtime
        stat = file.stat()
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        third = weights.verify("test-weights")
        assert not third.cached and not third.ok and third.actual_sha256 == hashlib.sha256(b"2" * 100_000).hexdigest()
        file.write_bytes(b"1" * 99_999)  # another size
        fourth = weights.verify("test-weights")
        assert not fourth.cached and not fourth.ok


def test_mirror_download_checks_the_hash(tmp_path, monkeypatch):
    payload = os.urandom(200_000)
    served = write(tmp_path / "served", "mirrored-00000000.pth", payload)
    good = entry_for(served, name="good")
    bad = entry_for(served, name="bad", sha256="cd" * 32)
    monkeypatch.setenv("ARN_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("ARN_DOWNLOAD_TIMEOUT", "5")
    with FileServer(tmp_path / "served") as server, weights.registered(good, bad):
        monkeypatch.setenv("ARN_WEIGHTS_URL", server.url)
        with pytest.raises(WeightsUnavailable, match="cd" * 32) as info:
            weights.resolve("bad")
        assert "download failed" in str(info.value) and not (tmp_path / "weights" / served.name).exists()
        path = weights.resolve("good")
    assert path == tmp_path / "weights" / served.name and path.read_bytes() == payload
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    with weights.registered(good):
        assert weights.verify("good").cached  # the download was hashed once and remembered


# ----------------------------------------------------------------------------------------- detr_checkpoint
@pytest.fixture(scope="module")
def detr_file(tmp_path_factory):
    torch.manual_seed(0)
    state = detr_state(ARN(tiny_config(), CATEGORIES))
    path = tmp_path_factory.mktemp("detr") / "tiny-detr.pth"
    torch.save({"model": state}, path)
    return path, state


def test_detr_checkpoint_by_name_loads_through_the_registry(tmp_path, detr_file):
    source, state = detr_file
    file = write(tmp_path / "weights", source.name, source.read_bytes())
    model = ARN(tiny_config(), CATEGORIES)
    with weights.registered(entry_for(file, name="tiny-detr")):
        report = load_detr_checkpoint(model, "tiny-detr")
    assert report.source == str(file) and report.missing == [] and report.mismatched == []
    assert torch.equal(
        model.state_dict()["encoder.layers.0.linear1.weight"], state["transformer.encoder.layers.0.linear1.weight"]
    )
    text = format_detr_report(report)
    assert text.splitlines()[0].startswith(f"DETR weights from {file}: {len(report.loaded)} tensors loaded")
    assert "class_embed.* (2)" in text and len(text.splitlines()) == 4


def test_training_start_prints_the_detr_key_mapping(tmp_path, detr_file, caplog):
    """A fresh fit loads the named DETR weights in setup and prints the loaded / skipped keys (rank zero)."""
    import dataclasses
    import logging
    import types

    from arn_lightning.training.lit_module import ARNLitModule

    source, state = detr_file
    file = write(tmp_path / "weights", source.name, source.read_bytes())
    module = ARNLitModule(
        arch=dataclasses.asdict(tiny_config()),
        triplet_categories=CATEGORIES,
        init_text_classifiers=False,
        detr_checkpoint="tiny-detr",
    )
    module._trainer = types.SimpleNamespace(ckpt_path=None)  # a fresh fit (a resume does not reload DETR)
    with weights.registered(entry_for(file, name="tiny-detr")), caplog.at_level(logging.INFO):
        module.setup("fit")
    printed = [  # through Lightning's rank-zero logger, which the CLI shows (the module's own logger is silent)
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("lightning") and r.getMessage().startswith("DETR weights from")
    ]
    assert len(printed) == 1 and str(file) in printed[0] and "skipped" in printed[0]
    assert torch.equal(
        module.model.state_dict()["encoder.layers.0.linear1.weight"],
        state["transformer.encoder.layers.0.linear1.weight"],
    )


def test_detr_checkpoint_paths_still_work_and_unknown_names_are_refused(tmp_path, detr_file):
    source, _ = detr_file
    assert resolve_detr_checkpoint(str(source)) == source
    assert resolve_detr_checkpoint(source) == source
    assert resolve_detr_checkpoint("missing/detr.pth") == Path("missing/detr.pth")  # a path: fails when read
    with pytest.raises(FileNotFoundError, match="detr-r50-coco"):
        load_detr_checkpoint(ARN(tiny_config(), CATEGORIES), tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="detr_checkpoint.*detr-r50-coco.*'detr-r51'"):
        resolve_detr_checkpoint("detr-r51")
    with pytest.raises(ValueError, match="weights for backbone_weights"):
        resolve_detr_checkpoint("resnet50-imagenet")


def test_detr_checkpoint_name_offline_fails_fast_with_instructions(tmp_path):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="detr-r50-e632da11.pth.*e632da11.*dl.fbaipublicfiles.com"):
        resolve_detr_checkpoint("detr-r50-coco")
    assert time.monotonic() - start < FAST_S


def test_format_detr_report_merges_layers():
    report = DetrLoadReport(
        loaded=["encoder.layers.0.linear1.weight", "backbone.body.conv1.weight"],
        unexpected=[f"transformer.decoder.layers.{i}.norm1.weight" for i in (3, 4, 5)] + ["class_embed.bias"],
        mismatched=[("input_proj.weight", "input_proj.weight", (256, 2048, 1, 1), (256, 1024, 1, 1))],
    )
    lines = format_detr_report(report).splitlines()
    assert lines[0] == "DETR weights: 2 tensors loaded (encoder 1, backbone.body 1)"
    assert lines[1] == "  not in this model, skipped (4): transformer.decoder.layers.3-5.* (3), class_embed.* (1)"
    assert lines[2] == "  kept their own initialisation (0): none"
    assert "input_proj.weight (256, 2048, 1, 1) -> input_proj.weight (256, 1024, 1, 1)" in lines[3]


# ------------------------------------------------------------------------------------ backbone and CLIP names
def test_backbone_and_clip_accept_registry_names(tmp_path):
    resnet = torchvision.models.resnet18()
    file = tmp_path / "weights" / "r18.pth"
    file.parent.mkdir()
    torch.save(resnet.state_dict(), file)
    from arn_lightning.models.backbone import Backbone
    from arn_lightning.weights.resnet import load_backbone_weights

    with weights.registered(entry_for(file, name="r18-test", setting="backbone_weights", architecture="resnet18")):
        backbone = Backbone("resnet18", 32, True, 2)
        load_backbone_weights(backbone, "r18-test")
        assert torch.equal(backbone.body.conv1.weight, resnet.conv1.weight)
        with pytest.raises(ValueError, match="ImageNet weights of resnet34"):
            load_backbone_weights(Backbone("resnet34", 32, True, 2), "r18-test")
    with pytest.raises(WeightsUnavailable, match="resnet50-0676ba61.pth"):
        load_backbone_weights(Backbone("resnet50", 32, True, 2), "resnet50-imagenet")
    config = ClipConfig(clip_model="ViT-B-32", clip_pretrained="clip-vit-b32-openai")
    assert _weights_source(config) == ("registry", "clip-vit-b32-openai")
    assert model_identity(config)["weights"] == {
        "registry": "clip-vit-b32-openai",
        "sha256": weights.get_entry("clip-vit-b32-openai").sha256,
    }
    with pytest.raises(ValueError, match="CLIP weights of ViT-B-16"):
        _weights_source(ClipConfig(clip_model="ViT-B-16", clip_pretrained="clip-vit-b32-openai"))


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_list_fetch_verify_path(tmp_path, capsys):
    folder = tmp_path / "weights"
    good = write(folder, "good.pth", b"good bytes")
    bad = write(folder, "bad.pth", b"bad bytes")
    missing = write(tmp_path, "missing.pth", b"m")
    entries = (
        entry_for(good, name="t-good"),
        entry_for(bad, name="t-bad", sha256="ef" * 32),
        entry_for(missing, name="t-missing"),
    )
    with weights.registered(*entries):
        assert weights_command.main(["list"]) == 0
        out = capsys.readouterr().out
        assert f"weights folder: {folder}" in out and "present, not verified" in out and "detr-r50-coco" in out
        assert "sha256-prefix e632da11" in out

        assert weights_command.main(["verify"]) == 1  # every present file: t-good ok, t-bad mismatch
        captured = capsys.readouterr()
        assert "ok        t-good" in captured.out
        assert (
            f"MISMATCH  t-bad: {bad}: expected sha256 {'ef' * 32} but got {hashlib.sha256(b'bad bytes').hexdigest()}"
            in captured.err
        )
        assert "t-missing" not in captured.out + captured.err
        assert weights_command.main(["verify", "t-good"]) == 0
        assert "remembered" in capsys.readouterr().out

        assert weights_command.main(["list"]) == 0
        out = capsys.readouterr().out
        assert any(line.startswith("t-good") and "verified" in line for line in out.splitlines())
        assert any(line.startswith("t-bad") and "MISMATCH" in line for line in out.splitlines())

        assert weights_command.main(["path", "t-good"]) == 0
        assert capsys.readouterr().out.strip() == str(good)
        assert weights_command.main(["path", "t-missing"]) == 1
        err = capsys.readouterr().err
        assert "missing.pth" in err and entries[2].sha256 in err and str(folder) in err

        start = time.monotonic()
        assert weights_command.main(["fetch", "t-missing", "--dir", str(tmp_path / "other")]) == 1
        assert time.monotonic() - start < FAST_S
        err = capsys.readouterr().err
        assert "ARN_OFFLINE is set" in err and str(tmp_path / "other") in err
        assert weights_command.main(["fetch", "t-good"]) == 0
        assert capsys.readouterr().out.strip() == str(good)

        with pytest.raises(SystemExit) as info:
            weights_command.main(["path", "nope"])
        assert info.value.code == 2 and "t-good" in capsys.readouterr().err


def test_cli_fetch_honours_hf_hub_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARN_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights_command.main(["fetch", "detr-r50-coco"]) == 1
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert weights_command.main(["verify"]) == 0
    assert "no registered weight file is present" in capsys.readouterr().out


def test_cli_fetch_from_a_trickling_server_fails_at_the_deadline(tmp_path, monkeypatch, capsys):
    """`weights fetch` from a server that sends one byte every half second never timed out."""
    from net_fixtures import TrickleServer

    monkeypatch.setenv("ARN_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("ARN_DOWNLOAD_DEADLINE", "2")
    with TrickleServer(interval_s=0.5) as server:
        monkeypatch.setenv("ARN_WEIGHTS_URL", server.url)
        start = time.monotonic()
        assert weights_command.main(["fetch", "detr-r50-coco"]) == 1
        assert time.monotonic() - start < 2.0 + 10.0  # the deadline, plus at most one read timeout
    assert "within the deadline of 2 s (ARN_DOWNLOAD_DEADLINE)" in capsys.readouterr().err
    assert list((tmp_path / "weights").iterdir()) == []  # no temporary file left
