"""CLIP parts: ``prompts`` (templates), ``config`` (ClipConfig, no open_clip import), ``clip`` (the open_clip model and
its weights), ``cache`` (cache folder, keys, files), ``embeddings`` (text embeddings), ``image_tower`` (the frozen image
tower of the distillation target). Nothing is imported here, so that ``import arn_lightning.text.config`` stays light.
"""
