"""Type aliases shared by the package (one definition each)."""

from __future__ import annotations

from pathlib import Path

#: A file or folder given as a string or a :class:`~pathlib.Path`.
PathLike = str | Path
