"""Building blocks of the ARN model: position encoding, transformer layer, temporal encoder, PAP / HA, heads,
backbone."""

import math
import time

import pytest
import torch
import torch.nn.functional as F
import torchvision

from arn_lightning.models.association import AssociationLayer, CueAttention, EntityFusion
from arn_lightning.models.backbone import Backbone
from arn_lightning.models.heads import MLP, CosineClassifier
from arn_lightning.models.position import SinePositionEncoding
from arn_lightning.models.transformer import (
    Memory,
    TemporalEncoder,
    TransformerDecoder,
    TransformerLayer,
    safe_padding_mask,
)
from arn_lightning.weights.download import WeightsUnavailable
from arn_lightning.weights.resnet import load_backbone_weights


# ---------------------------------------------------------------- position encoding
def test_sine_encoding_values_and_padding_invariance():
    enc = SinePositionEncoding(8)
    full = enc(torch.ones(1, 3, 5, dtype=torch.bool))  # [1, 3, 5, 8]
    assert full.shape == (1, 3, 5, 8)
    # y channel 0 at row i is sin((i + 1) / H * 2 pi) (frequency 1); x channel 1 is cos with the same frequency.
    assert torch.allclose(full[0, :, 0, 0], torch.sin(torch.arange(1, 4) / 3 * 2 * math.pi), atol=1e-5)
    assert torch.allclose(full[0, 0, :, 5], torch.cos(torch.arange(1, 6) / 5 * 2 * math.pi), atol=1e-5)
    padded_mask = torch.zeros(1, 4, 7, dtype=torch.bool)
    padded_mask[:, :3, :5] = True
    padded = enc(padded_mask)
    assert torch.allclose(padded[:, :3, :5], full, atol=1e-5)  # padding does not move the real pixels' code


def test_sine_encoding_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of 4"):
        SinePositionEncoding(6)
    with pytest.raises(ValueError, match="bool pixel_mask"):
        SinePositionEncoding(8)(torch.ones(1, 3, 5))


# ---------------------------------------------------------------- transformer layer
def test_layer_parameter_names_follow_detr():
    enc = dict(TransformerLayer(16, 2, 32, 0.0).named_parameters())
    dec = dict(TransformerLayer(16, 2, 32, 0.0, cross_attention=True).named_parameters())
    assert enc["self_attn.in_proj_weight"].shape == (48, 16)
    assert {"norm1.weight", "norm2.weight", "linear1.weight", "linear2.weight"} <= set(enc)
    assert "norm3.weight" not in enc and "multihead_attn.in_proj_weight" not in enc
    assert {"multihead_attn.in_proj_weight", "multihead_attn.out_proj.weight", "norm3.bias"} <= set(dec)


def test_safe_padding_mask_unmasks_only_fully_padded_rows():
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    assert safe_padding_mask(mask).tolist() == [[False, False], [True, False], [False, False]]
    assert safe_padding_mask(None) is None


def test_decoder_with_fully_padded_queries_and_empty_stack():
    decoder = TransformerDecoder(2, 16, 2, 32, 0.0)
    tgt = torch.randn(2, 3, 16, requires_grad=True)
    memory = Memory(torch.randn(2, 5, 16), torch.randn(2, 5, 16), torch.zeros(2, 5, dtype=torch.bool))
    padding = torch.tensor([[True, True, True], [False, False, True]])
    outputs, last = decoder(tgt, torch.randn(1, 3, 16), memory, tgt_padding_mask=padding)
    assert len(outputs) == 2 and outputs[-1].shape == (2, 3, 16)
    outputs[-1].sum().backward()
    assert torch.isfinite(tgt.grad).all()
    outputs, last = TransformerDecoder(0, 16, 2, 32, 0.0)(tgt, torch.zeros(1, 3, 16), memory)
    assert outputs == [] and last is tgt


def test_cross_attention_ignores_padded_memory():
    layer = TransformerLayer(16, 2, 32, 0.0, self_attention=False, cross_attention=True).eval()
    feats = torch.randn(1, 6, 16)
    padding = torch.tensor([[False, False, False, False, True, True]])
    changed = feats.clone()
    changed[:, 4:] += 10.0
    tgt = torch.randn(1, 3, 16)
    out = layer(tgt, memory=Memory(feats, None, padding))
    assert torch.allclose(out, layer(tgt, memory=Memory(changed, None, padding)), atol=1e-6)
    assert not torch.allclose(out, layer(tgt, memory=Memory(changed, None, None)), atol=1e-6)


# ---------------------------------------------------------------- temporal encoder
@pytest.mark.parametrize("causal", [True, False])
def test_temporal_encoder_causality(causal):
    torch.manual_seed(0)
    enc = TemporalEncoder(1, 3, causal, 16, 2, 32, 0.0).eval()
    memory = torch.randn(2 * 3, 4, 16)  # B=2, T=3, HW=4
    padding = torch.zeros(6, 4, dtype=torch.bool)
    out = enc(memory, padding, num_clips=2)
    changed = memory.clone()
    changed[2] += 5.0  # clip 0, last frame
    out2 = enc(changed, padding, num_clips=2)
    assert out.shape == (6, 4, 16)
    assert torch.allclose(out[3:], out2[3:])  # the other clip never changes
    assert torch.allclose(out[:2], out2[:2], atol=1e-6) == causal  # earlier frames see the last only if not causal


def test_temporal_encoder_padding_and_frame_count():
    enc = TemporalEncoder(1, 3, False, 16, 2, 32, 0.0).eval()
    memory = torch.randn(3, 4, 16)
    padding = torch.zeros(3, 4, dtype=torch.bool)
    padding[2, 1] = True  # token 1 is padding in frame 2
    changed = memory.clone()
    changed[2, 1] += 5.0
    out, out2 = enc(memory, padding, 1), enc(changed, padding, 1)
    assert torch.allclose(out[:2], out2[:2], atol=1e-6)  # real tokens do not attend to it
    assert torch.isfinite(enc(memory, torch.ones(3, 4, dtype=torch.bool), 1)).all()
    with pytest.raises(ValueError, match="at most 3 frames"):
        enc(torch.randn(4, 4, 16), torch.zeros(4, 4, dtype=torch.bool), 1)


# ---------------------------------------------------------------- PAP / HA
def test_conditional_cue_attention_sums_one_logit_per_half():
    torch.manual_seed(0)
    attn = CueAttention(8, 1, 0.0, conditional=True)
    cue, pos, feats, kpos = torch.randn(1, 3, 8), torch.randn(1, 3, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    out = attn(cue, pos, Memory(feats, kpos, None))
    q = cue + pos
    key = feats + kpos
    logits = sum(
        qp(q[..., 4 * i : 4 * (i + 1)]) @ kp(key).transpose(1, 2)
        for i, (qp, kp) in enumerate(zip(attn.query_parts, attn.key_parts))
    )  # [1, 3, 5]
    expected = attn.out_proj(torch.softmax(logits / math.sqrt(8), dim=-1) @ attn.value_proj(feats))
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("conditional", [True, False])
def test_cue_attention_masks_padding(conditional):
    attn = CueAttention(16, 2, 0.0, conditional=conditional).eval()
    feats = torch.randn(2, 5, 16)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[:, 3:] = True
    changed = feats.clone()
    changed[:, 3:] -= 7.0
    cue, pos = torch.randn(2, 3, 16), torch.randn(1, 3, 16)
    assert torch.allclose(
        attn(cue, pos, Memory(feats, None, padding)), attn(cue, pos, Memory(changed, None, padding)), atol=1e-6
    )


def test_entity_fusion_modes():
    pred, pos, sub, obj = (torch.randn(2, 3, 8) for _ in range(4))
    assert torch.equal(EntityFusion("add", 8, 2)(pred, pos, sub, obj), pred + pos + sub + obj)
    mlp = EntityFusion("mlp", 8, 2)
    assert len(mlp.mlp.layers) == 2 and mlp.mlp.layers[0].in_features == 24
    assert mlp(pred, pos, sub, obj).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="entity_fusion"):
        EntityFusion("concat", 8, 2)


def test_hierarchical_attention_mixes_pairs_and_pap_alone_does_not():
    torch.manual_seed(0)
    inputs = [torch.randn(1, 3, 16) for _ in range(5)]
    memory = Memory(torch.randn(1, 6, 16), torch.randn(1, 6, 16), None)

    def run(layer, complementary):
        return layer(
            inputs[0], complementary, torch.zeros(1, 3, 16), torch.zeros(1, 3, 16), (inputs[3], inputs[4]), memory
        )

    for hierarchical in (True, False):
        layer = AssociationLayer(16, 2, 32, 0.0, "conditional", 2, hierarchical=hierarchical).eval()
        base = run(layer, [inputs[1], inputs[2]])
        changed = inputs[1].clone()
        changed[:, 2] += 3.0  # pair 2's spatial cue
        moved = run(layer, [changed, inputs[2]])
        assert not torch.allclose(base[:, 2], moved[:, 2])
        # With HA pair 0 attends to every pair's cue; PAP alone keeps pair 0 on its own cue.
        assert torch.allclose(base[:, :2], moved[:, :2], atol=1e-6) != hierarchical


# ---------------------------------------------------------------- heads
def test_mlp_layers():
    mlp = MLP(4, 8, 2, 3)
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(8, 4), (8, 8), (2, 8)]
    assert mlp(torch.randn(5, 4)).shape == (5, 2)
    with pytest.raises(ValueError):
        MLP(4, 8, 2, 0)


def test_cosine_classifier_logits_scale_and_text_loading():
    head = CosineClassifier(6, 4, 3, num_extra=1)
    assert torch.isclose(head.logit_scale.exp(), torch.tensor(1 / 0.07))
    text = torch.randn(3, 4)
    head.load_text_embeddings(text, "objects")
    assert torch.equal(head.class_embeds.data, text)
    x = torch.randn(2, 5, 6)
    rows = torch.cat((text, head.extra_embeds.data))
    expected = F.normalize(head.proj(x), dim=-1) @ F.normalize(rows, dim=-1).t() / 0.07
    assert head.num_outputs == 4
    assert torch.allclose(head(x), expected, atol=1e-4)
    assert head(x).abs().max() <= 1 / 0.07 + 1e-4
    with torch.no_grad():
        head.logit_scale.fill_(10.0)
    assert head(x).abs().max() <= 100.0 + 1e-3  # clamped at logit_scale_max
    with pytest.raises(ValueError, match=r"objects text embeddings of shape \(3, 4\)"):
        head.load_text_embeddings(torch.randn(4, 4), "objects")


# ---------------------------------------------------------------- backbone
def test_backbone_freezing_stride_and_mask():
    net = Backbone("resnet18", 32, train_backbone=True, freeze_layers=2)
    frozen = {n.split(".")[0] for n, p in net.body.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "layer1"}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # frozen BN only
    mask = torch.ones(2, 64, 96, dtype=torch.bool)
    mask[1, :, 48:] = False
    feats, small = net(torch.randn(2, 3, 64, 96), mask)
    assert feats.shape == (2, 512, 2, 3) and net.num_channels == 512
    assert small[0].all() and small[1].tolist() == [[True, True, False]] * 2
    c4 = Backbone("resnet18", 16, train_backbone=False, freeze_layers=0)
    assert c4(torch.randn(1, 3, 64, 64), torch.ones(1, 64, 64, dtype=torch.bool))[0].shape == (1, 256, 4, 4)
    assert c4.num_channels == 256 and not hasattr(c4.body, "layer4")
    assert not any(p.requires_grad for p in c4.parameters())


def test_backbone_local_weights(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    net = Backbone("resnet18", 32, True, 2)
    load_backbone_weights(net, str(path))
    assert torch.equal(net.body.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert torch.equal(net.body.bn1.running_var, reference.bn1.running_var)
    c4 = Backbone("resnet18", 16, True, 2)  # layer4 of the file is ignored: the backbone stops at layer3
    load_backbone_weights(c4, str(path))
    assert torch.equal(c4.body.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="shape mismatches \\[.conv1.weight.\\]"):
        load_backbone_weights(Backbone("resnet18", 32, True, 2), str(tmp_path / "bad.pth"))
    with pytest.raises(FileNotFoundError, match="backbone_weights"):
        load_backbone_weights(Backbone("resnet18", 32, True, 2), str(tmp_path / "absent.pth"))


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """torch's hub cache in tmp_path; offline (as conftest sets HF_HUB_OFFLINE=1, repeated for clarity)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_backbone_imagenet_file_in_the_hub_cache_loads_without_network(torch_home, monkeypatch):
    monkeypatch.setenv("ARN_OFFLINE", "1")  # any download attempt would fail
    reference = torchvision.models.resnet18()  # random weights standing in for the ImageNet file
    torch_home.mkdir(parents=True)
    torch.save(reference.state_dict(), torch_home / "resnet18-f37072fd.pth")
    net = Backbone("resnet18", 32, True, 2)
    load_backbone_weights(net, "imagenet")
    assert torch.equal(net.body.layer2[1].conv2.weight, reference.layer2[1].conv2.weight)
    assert torch.equal(net.body.bn1.running_mean, reference.bn1.running_mean)


def test_backbone_imagenet_offline_failure_names_the_file_and_folder(torch_home):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as info:
        load_backbone_weights(Backbone("resnet50", 32, True, 2), "imagenet")
    assert time.monotonic() - start < 30.0  # at once: no connection is attempted
    message = str(info.value)
    assert message.startswith(f"Expected the ImageNet weights of resnet50 in {torch_home / 'resnet50-0676ba61.pth'}")
    assert "HF_HUB_OFFLINE is set" in message
    assert f"place it in the folder {torch_home} under the file name resnet50-0676ba61.pth" in message
    assert "set backbone_weights to a local torchvision state-dict file" in message
    assert isinstance(info.value, FileNotFoundError)


def test_backbone_imagenet_file_that_is_not_a_torch_file_is_explained(torch_home):
    torch_home.mkdir(parents=True)
    (torch_home / "resnet18-f37072fd.pth").write_bytes(b"truncated download")
    with pytest.raises(
        ValueError, match="Expected a torchvision resnet18 state dict in .*resnet18-f37072fd.pth but it cannot be read"
    ):
        load_backbone_weights(Backbone("resnet18", 32, True, 2), "imagenet")


def test_building_a_model_with_pretrained_settings_reads_no_file(torch_home, monkeypatch):
    # offline, with no file in the hub cache: constructing opens nothing, the builder's loading fails afterwards
    from arn_lightning.build import build_model, load_pretrained
    from arn_lightning.models.config import ARNConfig

    monkeypatch.setenv("ARN_OFFLINE", "1")
    arch = ARNConfig(
        backbone="resnet18",
        backbone_weights="imagenet",
        backbone_stride=16,
        hidden_dim=16,
        nheads=2,
        ffn_dim=32,
        enc_layers=1,
        entity_layers=1,
        predicate_layers=2,
        num_queries=4,
        num_frames=2,
        clip_embed_dim=16,
    )
    categories = {"attention": [[0, 2]], "spatial": [[3, 2]], "contacting": [[9, 2]]}
    torch.manual_seed(0)
    built = build_model(arch, categories)
    torch.manual_seed(0)
    random = build_model({**vars(arch), "backbone_weights": None}, categories)  # the same draws
    state = random.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in built.model.state_dict().items())
    with pytest.raises(WeightsUnavailable, match="ARN_OFFLINE is set"):
        load_pretrained(built.model)
    assert load_pretrained(random.model) is None  # nothing named, nothing loaded


def test_backbone_rejects_bad_arguments():
    with pytest.raises(ValueError, match="backbone in"):
        Backbone("vgg16", 32, True, 2)
    with pytest.raises(ValueError, match="stride"):
        Backbone("resnet18", 8, True, 2)
