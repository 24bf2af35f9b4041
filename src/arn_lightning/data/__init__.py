"""Action Genome data layer: from files on disk to batches of video clips.

Modules (import what you need; nothing is imported here so that tools stay light):

* :mod:`~arn_lightning.data.ag`: read the release format and apply the standard filtering (``load_annotations``,
  ``FrameAnnotation``, ``AnnotationError``);
* :mod:`~arn_lightning.data.frames`: decode annotated frames from videos (``dump_frames``), read frame images;
* :mod:`~arn_lightning.data.clips`: clip windows for training (causal / centred) and evaluation (tiled / key frame);
* :mod:`~arn_lightning.data.transforms`, :mod:`~arn_lightning.data.dataset`, :mod:`~arn_lightning.data.collate`:
  resize / flip on ``uint8``, per-frame targets, padded batches with pixel masks (``uint8`` from the loaders,
  normalised on the device by ``collate.normalize_batch``; normalised on the CPU for inference);
* :mod:`~arn_lightning.data.datamodule`: ``AGDataModule``;
* :mod:`~arn_lightning.data.stats`: the numbers of ``arn-lightning stats``;
* :mod:`~arn_lightning.data.synth` (with ``synth_plans``, ``synth_scene``, ``synth_render``): the synthetic AG.
"""
