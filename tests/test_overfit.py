"""A tiny ARN overfits one hand-made clip: the loss collapses and the postprocessed graph recovers the ground truth.

Exercises the whole training path except Lightning: model -> criterion (matcher, focal triplet loss, distillation
against the frozen tiny CLIP image tower, aux layers) -> weighted total -> AdamW; then postprocess.
"""

import pytest
import torch
from torchvision.ops import box_convert, box_iou

from arn_lightning.criterion import LossConfig, SetCriterion
from arn_lightning.models.arn import ARN, ARNConfig
from arn_lightning.postprocess import PostProcess, PostProcessConfig
from arn_lightning.text.clip import register_tiny_clip
from arn_lightning.text.config import ClipConfig
from arn_lightning.text.embeddings import text_embeddings
from arn_lightning.text.image_tower import FrozenClipImageEncoder
from arn_lightning.text.prompts import PromptConfig

SIZE = 64  # resized frame (h = w), no padding
ORIG = 128  # original frame (h = w): boxes scale by 2
MAX_STEPS = 80  # seeds 0-4 succeed within 30-40 steps
CHECK_EVERY = 5
LR = 3e-3
PERSON = [0.5, 0.5, 0.4, 0.8]  # normalised cxcywh
CUP, CHAIR = [0.3, 0.6, 0.16, 0.16], [0.72, 0.7, 0.3, 0.4]
CATEGORIES = {"attention": [[0, 11], [1, 8]], "spatial": [[4, 8], [5, 11], [6, 8]], "contacting": [[14, 11], [19, 8]]}


def one_hot(size, *columns):
    row = [0] * size
    for column in columns:
        row[column] = 1
    return row


def frame_target(index, objects):
    """``objects``: list of (AG label, box, attention col, spatial cols, contacting cols)."""
    n = len(objects)
    boxes = torch.tensor([PERSON] + [o[1] for o in objects])  # [N+1, 4] normalised cxcywh
    return {
        "frame": f"clip.mp4/{index:06d}.png",
        "orig_size": torch.tensor([ORIG, ORIG]),
        "size": torch.tensor([SIZE, SIZE]),
        "evaluate": True,
        "sub_boxes": boxes[:1].repeat(n, 1),
        "obj_boxes": boxes[1:],
        "obj_labels": torch.tensor([o[0] for o in objects]),
        "attention": torch.tensor([one_hot(3, o[2]) for o in objects]),
        "spatial": torch.tensor([one_hot(6, *o[3]) for o in objects]),
        "contacting": torch.tensor([one_hot(17, *o[4]) for o in objects]),
        "boxes": box_convert(boxes, "cxcywh", "xyxy") * ORIG,
        "labels": torch.tensor([1] + [o[0] for o in objects]),
    }


def make_batch():
    cup = (11, CUP, 0, [2], [5])  # looking_at; in_front_of; holding
    chair = (8, CHAIR, 1, [1, 3], [10])  # not_looking_at; beneath + behind; sitting_on
    generator = torch.Generator().manual_seed(0)
    return {
        "pixel_values": torch.randn(1, 2, 3, SIZE, SIZE, generator=generator),
        "pixel_mask": torch.ones(1, 2, SIZE, SIZE, dtype=torch.bool),
        "targets": [frame_target(0, [cup, chair]), frame_target(1, [chair])],
    }


def tiny_arn(clip_cfg, tmp_path):
    """resnet18 (random, frozen: its backward pass would triple the step time), D = 32, Q = 4, T = 2."""
    config = ARNConfig(
        backbone="resnet18",
        train_backbone=False,
        hidden_dim=32,
        nheads=2,
        ffn_dim=64,
        dropout=0.0,
        enc_layers=1,
        entity_layers=2,
        predicate_layers=2,
        num_queries=4,
        num_frames=2,
        clip_embed_dim=16,
    )
    model = ARN(config, CATEGORIES)
    model.init_text_classifiers(text_embeddings(clip_cfg, PromptConfig(), CATEGORIES, cache_dir=str(tmp_path)))
    return model


def predict(model, postprocess, batch):
    model.eval()
    with torch.no_grad():
        outputs = model(batch["pixel_values"], batch["pixel_mask"])
    model.train()
    return postprocess(outputs, batch["targets"], only_evaluated=True)


def mismatches(prediction, target):
    """What the best-scoring pairs get wrong about the GT pairs (labels, boxes, predicates); empty if nothing."""
    num = target["obj_labels"].numel()
    rows = prediction["scores"][prediction["pairs"][:, 1]].argsort(descending=True)[:num]  # best pairs
    problems, found = [], set()
    for row in rows.tolist():
        sub, obj = prediction["pairs"][row].tolist()
        obj_ious = box_iou(prediction["boxes"][obj][None], target["boxes"][1:])[0]  # [N]
        j = int(obj_ious.argmax())
        found.add(j)
        if box_iou(prediction["boxes"][sub][None], target["boxes"][:1])[0, 0] < 0.5 or obj_ious[j] < 0.5:
            problems.append(f"pair {row}: boxes miss GT {j}")
        if prediction["labels"][obj] != target["labels"][j + 1]:
            problems.append(f"pair {row}: label {int(prediction['labels'][obj])} for GT {j}")
        if int(prediction["attention"][row].argmax()) != int(target["attention"][j].argmax()):
            problems.append(f"pair {row}: attention {prediction['attention'][row].tolist()} for GT {j}")
        for kind in ("spatial", "contacting"):  # the GT predicates are the pair's best-scoring ones
            labels = set(target[kind][j].nonzero().flatten().tolist())
            best = set(prediction[kind][row].topk(len(labels)).indices.tolist())
            if best != labels:
                problems.append(f"pair {row}: best {kind} {sorted(best)} for GT {j} {sorted(labels)}")
    if len(found) != num:
        problems.append(f"the best {num} pairs cover GT pairs {sorted(found)} only")
    return problems


@pytest.mark.slow
def test_tiny_arn_overfits_one_clip(tmp_path, one_thread):
    clip_cfg = ClipConfig(clip_model=register_tiny_clip(), clip_pretrained=None, cache_dir=str(tmp_path))
    model, batch = tiny_arn(clip_cfg, tmp_path), make_batch()
    frames = batch["pixel_values"].flatten(0, 1), batch["pixel_mask"].flatten(0, 1)  # [BT, 3, H, W], [BT, H, W]
    clip_embeds = FrozenClipImageEncoder(clip_cfg).embed(*frames, [t["frame"] for t in batch["targets"]])
    criterion, postprocess = (
        SetCriterion(LossConfig(), model.vocabulary),
        PostProcess(PostProcessConfig(), model.vocabulary),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    first = problems = None
    for step in range(1, MAX_STEPS + 1):
        losses = criterion(model(batch["pixel_values"], batch["pixel_mask"]), batch["targets"], clip_embeds)
        loss = criterion.weighted_total(losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first or loss.item()
        if step % CHECK_EVERY == 0:
            predictions = predict(model, postprocess, batch)
            problems = [p for pred, t in zip(predictions, batch["targets"], strict=True) for p in mismatches(pred, t)]
            if loss.item() < 0.1 * first and not problems:
                break
    assert loss.item() < 0.1 * first, f"loss {first:.3f} -> {loss.item():.3f} in {step} steps"
    assert not problems, problems
    assert [p["frame"] for p in predictions] == ["clip.mp4/000000.png", "clip.mp4/000001.png"]
    assert "loss_distill" in losses and "loss_predicate_0" in losses  # distillation and aux layers took part
