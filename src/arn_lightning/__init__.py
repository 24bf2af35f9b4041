"""arn-lightning: ARN (CVPR 2025) dynamic scene graph generation as a PyTorch Lightning project."""

__version__ = "0.1.0"
