"""The training system around the model: everything that needs Lightning.

- :mod:`.lit_module`: ``ARNLitModule``, the only LightningModule (steps, optimiser, metrics);
- :mod:`.lightning_cli`: the LightningCLI of ``arn-lightning fit | validate | test | predict``;
- :mod:`.callbacks`: the validation reports (``SceneGraphReport``) and the end-of-fit summary (``RunSummary``);
- :mod:`.prediction_writer`: the prediction files and ``metrics_test.json`` of ``test`` / ``predict``;
- :mod:`.checkpoints`, :mod:`.rng`, :mod:`.runs`: atomic checkpoints, exact resume, run folders;
- :mod:`.evaluation`: a checkpoint scored on a split through a ``Trainer`` (the notebook).

Nothing is imported here, so that ``import arn_lightning.training.runs`` stays light.
"""
