"""The local web app of ``arn-lightning serve`` (docs/app.md): run a video, open an inference output, compare a
prediction file with the ground truth.

:mod:`~arn_lightning.app.logic` holds everything the pages compute and imports no gradio (unit-testable, reusable);
:mod:`~arn_lightning.app.ui` builds the Gradio page on it (the optional extra ``app``).
"""
