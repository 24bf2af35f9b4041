"""``arn-lightning configs list | show NAME | copy NAME [DEST] [--force]``: the configs that ship with the package.

``list`` prints each packaged config's name (what ``--config NAME`` takes) and its first comment line; ``show``
prints a config; ``copy`` writes it to ``DEST`` (default: ``<basename>.yaml`` in the current folder; into ``DEST``
when it is a folder) atomically, and refuses to replace an existing file unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arn_lightning.atomic import atomic_write_text
from arn_lightning.configs import SUFFIX, config_folder, config_names, packaged_config


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="arn-lightning configs",
        description="The configs that ship with the package. `--config NAME` of fit / validate / test / predict "
        "takes their names (a local file of that name wins).",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the names of the packaged configs, with their first comment line")
    show = actions.add_parser("show", help="print a packaged config")
    show.add_argument("name", help="a config name (ag_sgdet, trainer/gpu_bf16, ...)")
    copy = actions.add_parser("copy", help="write a packaged config to a file, to edit it")
    copy.add_argument("name", help="a config name (ag_sgdet, trainer/gpu_bf16, ...)")
    copy.add_argument("dest", nargs="?", type=Path, default=None, help="file or folder (default: ./<basename>.yaml)")
    copy.add_argument("--force", action="store_true", help="replace an existing DEST file")
    return parser


def summary(text: str) -> str:
    """The first comment line of a config's ``text``, without ``#`` (empty when it starts with no comment)."""
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return first.lstrip("#").strip() if first.startswith("#") else ""


def list_configs() -> str:
    """One line per packaged config: its name and :func:`summary`."""
    names = config_names()
    width = max(len(name) for name in names) + 2
    lines = [f"{name:<{width}}{summary(packaged_config(name).read_text(encoding='utf-8'))}" for name in names]
    return "\n".join([*lines, f"({len(names)} configs in {config_folder()})"])


def copy_config(name: str, dest: Path | None, force: bool) -> Path:
    """Write the packaged config ``name`` to ``dest`` (atomically); returns the file written.

    Raises:
        ValueError: an unknown name (the names listed), or ``dest`` exists and ``force`` is false.
    """
    source = packaged_config(name)
    target = Path(dest) if dest is not None else Path(source.name)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not force:
        raise ValueError(f"Expected no file at {target} but one exists: pass --force to replace it")
    if target.suffix != SUFFIX:
        print(f"arn-lightning configs: note: {target} does not end in {SUFFIX}", file=sys.stderr)
    atomic_write_text(target, source.read_text(encoding="utf-8"))
    return target


def main(argv: list[str]) -> int:
    """Run the command; exit 2 for an unknown name or a refused overwrite."""
    args = build_parser().parse_args(argv)
    try:
        if args.action == "list":
            print(list_configs())
        elif args.action == "show":
            sys.stdout.write(packaged_config(args.name).read_text(encoding="utf-8"))
        else:
            target = copy_config(args.name, args.dest, args.force)
            print(f"wrote {target} (a copy of {packaged_config(args.name)}); use it with --config {target}")
    except ValueError as exc:
        print(f"arn-lightning configs: error: {exc}", file=sys.stderr)
        return 2
    return 0
