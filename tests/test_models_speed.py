"""The speed switches: ``channels_last`` backbone, ``torch.compile`` of the model, bf16 autocast training steps."""

from __future__ import annotations

import io
import time

import pytest
import torch

from arn_lightning.models.backbone import Backbone
from arn_lightning.models.config import ARNConfig
from arn_lightning.training import lit_module
from arn_lightning.training.lit_module import ARNLitModule
from test_overfit import CATEGORIES, make_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ARNConfig(
    backbone="resnet18",
    train_backbone=True,
    freeze_backbone_layers=2,
    hidden_dim=32,
    nheads=2,
    ffn_dim=64,
    dropout=0.1,
    enc_layers=1,
    entity_layers=2,
    predicate_layers=2,
    num_queries=4,
    num_frames=2,
    clip_triplets=False,
    distill=False,
)


def tiny_module(**switches: bool) -> ARNLitModule:
    torch.manual_seed(0)
    return ARNLitModule(arch=TINY, triplet_categories=CATEGORIES, init_text_classifiers=False, **switches)


def test_channels_last_backbone_gives_the_same_features_and_keys() -> None:
    torch.manual_seed(0)
    backbone = Backbone("resnet18", 32, True, 2).eval()
    images, mask = torch.randn(2, 3, 64, 96), torch.ones(2, 64, 96, dtype=torch.bool)
    with torch.no_grad():
        expected, expected_mask = backbone(images, mask)
        keys = list(backbone.state_dict())
        backbone.use_channels_last()
        backbone.use_channels_last()  # idempotent
        features, features_mask = backbone(images, mask)
    assert backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(backbone.state_dict()) == keys and torch.equal(features_mask, expected_mask)
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)


def test_switches_are_hyperparameters_applied_by_configure_model() -> None:
    plain = tiny_module()
    module = tiny_module(compile=True, channels_last=True)
    assert module.hparams.compile is True and module.hparams.channels_last is True
    assert plain.hparams.compile is False and plain.hparams.channels_last is False
    module.configure_model()
    plain.configure_model()
    assert module.model._compiled_call_impl is not None and module.model.backbone.channels_last
    assert plain.model._compiled_call_impl is None and not plain.model.backbone.channels_last
    compiled = module.model._compiled_call_impl
    module.configure_model()  # once only
    assert module.model._compiled_call_impl is compiled
    state = module.state_dict()
    assert list(state) == list(plain.state_dict()) and not any("_orig_mod" in key for key in state)
    buffer = io.BytesIO()
    torch.save(state, buffer)  # a compiled module saves and loads like a plain one, both ways
    buffer.seek(0)
    plain.load_state_dict(torch.load(buffer, weights_only=True))
    module.load_state_dict(plain.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(value, state[key])


@pytest.mark.slow  # about 30 s of CPU for the dynamo traces, over a minute on a shared 2-core machine
def test_compiled_training_step_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real ``torch.compile`` (dynamo, eager backend: no C++ toolchain needed) of the tiny model, forward and
    backward (the default inductor backend needs a C++ toolchain and minutes of CPU here)."""
    monkeypatch.setattr(lit_module, "COMPILE_OPTIONS", {"backend": "eager"})
    start = time.process_time()
    batch = make_batch()
    eager, compiled = tiny_module(), tiny_module(compile=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.configure_model()
    eager.eval(), compiled.eval()
    with torch.no_grad():
        expected, got = eager(batch), compiled(batch)
    torch.testing.assert_close(got.obj_logits, expected.obj_logits, atol=1e-5, rtol=1e-5)
    compiled.train()
    loss = compiled._losses(batch, compiled(batch))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and compiled.model.input_proj.weight.grad is not None
    assert time.process_time() - start < 60


def test_bf16_autocast_training_step_has_finite_float32_losses() -> None:
    module = tiny_module(channels_last=True)
    module.configure_model()
    module.train()
    batch = make_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = module(batch)
        losses = module._losses(batch, outputs)
    assert outputs.obj_logits.dtype == torch.bfloat16  # the model did run in bf16
    assert outputs.aux_outputs  # the auxiliary layers are matched and weighed too
    for name, value in losses.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name
    losses["loss"].backward()
    grads = [p.grad for p in module.model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
