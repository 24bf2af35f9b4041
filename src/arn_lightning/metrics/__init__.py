"""Evaluation of dynamic scene graphs on Action Genome (``docs/action_genome.md`` sections 3 and 4).

- :mod:`~arn_lightning.metrics.functional`: the protocol as a pure, batched core (``scene_graph_recall``,
  ``frame_hits``, ``ranked_triplets``, ``RecallConfig``) and the fixed-size integer states it accumulates;
- :mod:`~arn_lightning.metrics.recall`: ``SceneGraphRecall``, the torchmetrics class (R@K, mR@K aggregated and
  per frame, hmean, per-predicate recall; exact under DDP);
- :mod:`~arn_lightning.metrics.predictions`: the per-frame prediction format, its validation and the JSON Lines
  prediction files (``write_predictions``, ``read_predictions``);
- :mod:`~arn_lightning.metrics.batching`: validation and concatenation of per-frame records of arrays.

Submodules are imported explicitly (``from arn_lightning.metrics.recall import SceneGraphRecall``) so that reading a
prediction file does not import torchmetrics.
"""
