"""Experiments built on the library: the demo job (``make demo``) and the paper's ablation rows (``ablate``).
Nothing in the library imports this package."""
