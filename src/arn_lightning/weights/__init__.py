"""Pretrained weights: the registry of named files, the one downloader, and the loaders that put ResNet, DETR and
CLIP weights into a model after it is built (docs/weights.md).

- :mod:`.registry`: named files (``detr-r50-coco``, ``resnet50-imagenet``, ``clip-vit-b32-openai``): one cache
  folder, resolve / fetch / verify;
- :mod:`.download`: the one downloader (offline switches, timeouts, hash check, atomic files);
- :mod:`.detr`: the COCO DETR checkpoint mapped onto ARN's state dict.

Nothing is imported here.
"""
