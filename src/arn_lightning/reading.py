"""Reading users' text files: a decoding error names the file, the line and the column, and says what was expected.

Python's own message (``'utf-8' codec can't decode byte 0xe9 in position 1043: invalid continuation byte``) names
neither the file nor the line; :func:`read_text` and :func:`decode_line` replace it.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "classes.txt"
>>> _ = path.write_bytes(b"person\\ncaf\\xe9\\n")
>>> try:
...     read_text(path)
... except TextDecodeError as error:
...     print(str(error).split(": ")[0].rsplit("/", 1)[-1])
classes.txt line 2, column 4
"""

from __future__ import annotations

from pathlib import Path

from arn_lightning._types import PathLike


class TextDecodeError(ValueError):
    """A text file that is not valid UTF-8; the message names the file, the line and the column."""


def _where(path: PathLike, data: bytes, error: UnicodeDecodeError, first_line: int = 1) -> str:
    line = first_line + data.count(b"\n", 0, error.start)
    column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
    return (
        f"{path} line {line}, column {column}: Expected UTF-8 text but got the byte {data[error.start]:#04x} (save "
        f"the file as UTF-8)"
    )


def read_text(path: PathLike) -> str:
    """The UTF-8 text of ``path``.

    Raises:
        OSError: the file cannot be read.
        TextDecodeError: it is not valid UTF-8 (naming the file, the line and the column of the first bad byte).
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TextDecodeError(_where(path, data, error)) from None


def decode_line(path: PathLike, raw: bytes, number: int) -> str:
    """Line ``number`` (1-based) of ``path``, read as bytes, decoded as UTF-8.

    Raises:
        TextDecodeError: it is not valid UTF-8 (naming the file, the line and the column).
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TextDecodeError(_where(path, raw, error, number)) from None


__all__ = ["TextDecodeError", "decode_line", "read_text"]
