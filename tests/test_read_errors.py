"""Every read error names the file: a user's file that its decoder refuses gives a message with the file, the line
(or key, or frame) and what was expected, never the library's message alone (issue 24, section 6).

Covered here: UTF-8 text (class files, frame-key lists, prediction files), JSON (the ablation's metrics), the CLIP
image-embedding cache (a damaged entry is computed again). Elsewhere: pickles (test_data_ag), images and videos
(test_data_frames, test_video), checkpoints (test_training_resume, test_infer), exported ONNX models
(test_onnx_export).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from arn_lightning import vocab
from arn_lightning.data.ag import AnnotationError, read_class_file
from arn_lightning.data.frames import load_annotated_frames
from arn_lightning.experiments.ablation import AblationError, read_metrics
from arn_lightning.metrics.predictions import PredictionFileError, read_predictions
from arn_lightning.reading import TextDecodeError, read_text
from arn_lightning.text.config import ClipConfig
from arn_lightning.text.image_tower import FrozenClipImageEncoder
from arn_lightning.weights.detr import read_detr_state_dict
from arn_lightning.weights.resnet import load_backbone_weights

LATIN1 = "caf\xe9".encode("latin-1")  # "café" saved as Latin-1: the byte 0xe9 is not UTF-8


def test_read_text_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"first\nsecond\n" + LATIN1 + b"\n")
    with pytest.raises(TextDecodeError) as info:
        read_text(path)
    assert str(info.value) == (
        f"{path} line 3, column 4: Expected UTF-8 text but got the byte 0xe9 (save the file as UTF-8)"
    )
    path.write_bytes("first\ncafé\n".encode())
    assert read_text(path).splitlines() == ["first", "café"]


def test_a_class_file_in_another_encoding_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "object_classes.txt"
    lines = [vocab.raw_spelling(n).encode() for n in vocab.OBJECT_CLASSES]
    lines[4] = LATIN1
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(AnnotationError, match=rf"^{path} line 5, column 4: Expected UTF-8 text but got the byte 0xe9"):
        read_class_file(path, vocab.OBJECT_CLASSES, vocab.RAW_OBJECT_NAMES)


def test_a_frame_key_list_in_another_encoding_names_its_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_bytes(b"001YG.mp4/000089.png\n" + b"00" + LATIN1 + b".mp4/000001.png\n")
    with pytest.raises(TextDecodeError, match=rf"^{keys} line 2, column 6: Expected UTF-8 text"):
        load_annotated_frames(tmp_path, keys_file=keys)


def test_a_prediction_file_with_a_non_utf8_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    empty = ", ".join(f'"{key}": []' for key in ("boxes", "labels", "scores", "pairs"))
    relations = ", ".join(f'"{key}": []' for key in ("attention", "spatial", "contacting"))
    good = ('{"frame": "a.mp4/000001.png", ' + empty + ", " + relations + "}\n").encode()
    path.write_bytes(good + b'{"frame": "' + LATIN1 + b'"}\n')
    with pytest.raises(PredictionFileError) as info:
        list(read_predictions(path))
    assert str(info.value) == (
        f"{path} line 2: column 15: Expected UTF-8 text but got the byte 0xe9 (save the file as UTF-8)"
    )
    assert info.value.line == 2


def test_a_truncated_metrics_file_of_an_ablation_run_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "metrics_test.json").write_text('{"with/R@20": 0.5, ')
    with pytest.raises(AblationError, match=rf"{tmp_path / 'metrics_test.json'}: Expected the JSON test metrics"):
        read_metrics(tmp_path)


def test_a_damaged_image_cache_entry_is_computed_again(tiny_clip: ClipConfig, caplog) -> None:
    encoder = FrozenClipImageEncoder(ClipConfig(**{**vars(tiny_clip), "image_cache": True}))
    pixels, mask = torch.randn(1, 3, 32, 32), torch.ones(1, 32, 32, dtype=torch.bool)
    first = encoder.embed(pixels, mask, ["a.mp4/000001.png"])
    [entry] = encoder.cache_path.rglob("*.pt")
    entry.write_bytes(b"not a torch file")
    again = encoder.embed(pixels, mask, ["a.mp4/000001.png"])
    torch.testing.assert_close(again, first)
    assert f"{entry}: Expected a cached CLIP image embedding but it cannot be read" in caplog.text
    assert torch.equal(torch.load(entry, weights_only=True), first[0])  # written again


def test_a_config_file_in_another_encoding_or_not_yaml_names_the_file(tmp_path: Path, capsys) -> None:
    """jsonargparse ended a non-UTF-8 --config in a traceback and named a YAML error's place "<unicode string>"."""
    from arn_lightning.training.lightning_cli import run_lightning_cli

    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"trainer:\n  max_steps: 1\nmodel:\n  x: " + LATIN1 + b"\n")
    assert run_lightning_cli(["fit", "--config", str(latin)]) == 2
    assert f"--config {latin} line 4, column 9: Expected UTF-8 text but got the byte 0xe9" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer:\n  max_steps: [1\n")
    assert run_lightning_cli(["fit", f"--config={broken}"]) == 2
    assert (
        f"--config {broken}: Expected a YAML config but got a syntax error: while parsing a flow sequence at line 2, "
        "column 14" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "content", [b"", b"not a torch file", b"PK\x03\x04 truncated zip"], ids=["empty", "text", "zip"]
)
def test_a_weights_file_torch_cannot_read_is_named(tmp_path: Path, content: bytes) -> None:
    from arn_lightning.models.backbone import Backbone

    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"Expected a ResNet state dict .* in {path} \(backbone_weights\)"):
        load_backbone_weights(Backbone("resnet18", 32, True, 2), str(path))
    with pytest.raises(ValueError, match=rf"Expected a DETR checkpoint .* in {path} \(detr_checkpoint\)"):
        read_detr_state_dict(path)
