"""The SDPA attention (:class:`arn_lightning.models.transformer.Attention`) against torch's explicit math."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from arn_lightning.models.association import CueAttention
from arn_lightning.models.transformer import SDPA_TOLERANCE, Attention, Memory, TransformerLayer, safe_padding_mask

D, HEADS = 32, 4


def _pair(dropout: float = 0.0) -> tuple[Attention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    new = Attention(D, HEADS, dropout=dropout)
    nn.init.normal_(new.in_proj_bias)  # non-zero biases: a q/k/v slicing error would show
    nn.init.normal_(new.out_proj.bias)
    old = nn.MultiheadAttention(D, HEADS, dropout=dropout, batch_first=True)
    old.load_state_dict(new.state_dict())  # the same keys: strict load both ways
    new.load_state_dict(old.state_dict())
    return new, old


def _masks(n: int, length: int, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(key padding [N, S], attn mask [L, S], per-head attn mask [N*H, L, S])``, each leaving a key per row."""
    g = torch.Generator().manual_seed(1)
    padding = torch.rand(n, s, generator=g) < 0.3
    padding[:, 0] = False
    attn = torch.rand(length, s, generator=g) < 0.3
    attn[:, 1] = False
    per_head = torch.rand(n * HEADS, length, s, generator=g) < 0.3
    per_head[..., 1] = False
    return padding, attn, per_head


@pytest.mark.parametrize("self_attention", [True, False])
@pytest.mark.parametrize("masks", ["none", "padding", "attn", "per_head", "both"])
def test_sdpa_matches_multihead_attention_math(self_attention: bool, masks: str) -> None:
    new, old = _pair()
    new.eval(), old.eval()
    n, length, s = 3, 7, 7 if self_attention else 11
    query = torch.randn(n, length, D)
    key = query if self_attention else torch.randn(n, s, D)
    value = torch.randn(n, s, D)
    padding, attn, per_head = _masks(n, length, s)
    kwargs = {
        "none": {},
        "padding": {"key_padding_mask": padding},
        "attn": {"attn_mask": attn},
        "per_head": {"attn_mask": per_head},
        "both": {"key_padding_mask": padding, "attn_mask": per_head},
    }[masks]
    out, weights = new(query, key, value, need_weights=False, **kwargs)
    expected, _ = old(query, key, value, need_weights=True, **kwargs)  # need_weights: torch's explicit math
    assert weights is None and out.shape == (n, length, D)
    assert (out - expected).abs().max().item() <= SDPA_TOLERANCE
    torch.testing.assert_close(out, expected, atol=SDPA_TOLERANCE, rtol=0)


def test_weights_requested_take_the_explicit_path_and_gradients_agree() -> None:
    new, old = _pair()
    query, memory = torch.randn(2, 5, D, requires_grad=True), torch.randn(2, 9, D)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[1, 6:] = True
    out, weights = new(query, memory, memory, key_padding_mask=padding, need_weights=True)
    expected, expected_weights = old(query, memory, memory, key_padding_mask=padding, need_weights=True)
    assert torch.equal(out, expected) and torch.equal(weights, expected_weights)  # the same code path
    assert weights.shape == (2, 5, 9) and float(weights[1, :, 6:].detach().abs().max()) == 0.0
    fast, _ = new(query, memory, memory, key_padding_mask=padding, need_weights=False)
    (grad_new,) = torch.autograd.grad(fast.square().sum(), query)
    (grad_old,) = torch.autograd.grad(expected.square().sum(), query)
    torch.testing.assert_close(grad_new, grad_old, atol=1e-4, rtol=1e-4)


def test_dropout_only_in_training() -> None:
    new, _ = _pair(dropout=0.5)
    x = torch.randn(2, 6, D)
    new.eval()
    assert torch.equal(new(x, x, x, need_weights=False)[0], new(x, x, x, need_weights=False)[0])
    new.train()
    assert not torch.equal(new(x, x, x, need_weights=False)[0], new(x, x, x, need_weights=False)[0])


def test_transformer_layer_matches_the_multihead_attention_layer() -> None:
    """A whole decoder layer with padding (a fully padded frame included, unmasked by ``safe_padding_mask``)."""
    torch.manual_seed(0)
    layer = TransformerLayer(D, HEADS, 64, dropout=0.1, cross_attention=True).eval()
    reference = TransformerLayer(D, HEADS, 64, dropout=0.1, cross_attention=True).eval()
    reference.self_attn = nn.MultiheadAttention(D, HEADS, dropout=0.1, batch_first=True)
    reference.multihead_attn = nn.MultiheadAttention(D, HEADS, dropout=0.1, batch_first=True)
    reference.load_state_dict(layer.state_dict())
    reference.eval()
    assert list(reference.state_dict()) == list(layer.state_dict())
    tgt, pos = torch.randn(3, 6, D), torch.randn(1, 6, D)
    memory = Memory(torch.randn(3, 10, D), torch.randn(3, 10, D), torch.zeros(3, 10, dtype=torch.bool))
    memory.padding_mask[1, 4:] = True
    memory.padding_mask[2] = True  # nothing real: unmasked, finite
    tgt_padding = torch.zeros(3, 6, dtype=torch.bool)
    tgt_padding[0, 3:] = True
    with torch.no_grad():
        out = layer(tgt, pos, memory, tgt_padding_mask=tgt_padding)
        expected = reference(tgt, pos, memory, tgt_padding_mask=tgt_padding)
    assert torch.isfinite(out).all() and safe_padding_mask(memory.padding_mask)[2].sum() == 0
    torch.testing.assert_close(out, expected, atol=SDPA_TOLERANCE, rtol=0)


def test_cue_attention_keeps_multihead_attention_keys() -> None:
    cue = CueAttention(D, HEADS, dropout=0.0, conditional=False)
    assert isinstance(cue.attn, Attention) and isinstance(cue.attn, nn.MultiheadAttention)
    assert sorted(cue.state_dict()) == [
        "attn.in_proj_bias",
        "attn.in_proj_weight",
        "attn.out_proj.bias",
        "attn.out_proj.weight",
    ]
