"""``arn-lightning weights list | fetch NAME | verify [NAME ...] | path NAME``: the named pretrained weight files.

Examples::

    arn-lightning weights list                      # names, files, hashes, where used, state in the cache folder
    arn-lightning weights fetch detr-r50-coco       # download into the cache folder and check the hash
    arn-lightning weights verify                    # check every present file against its published hash
    arn-lightning weights path detr-r50-coco        # the verified file's path (for scripts)

``--dir DIR`` (or ``$ARN_WEIGHTS_DIR``) replaces the cache folder, by default ``torch.hub.get_dir()/checkpoints``.
Nothing waits on a network: ``ARN_OFFLINE`` / ``HF_HUB_OFFLINE`` switch downloads off (an absent file fails at once,
with the by-hand instructions), ``ARN_DOWNLOAD_TIMEOUT`` bounds every connection and read, ``ARN_WEIGHTS_URL``
names a mirror (``docs/weights.md``). Exit codes: 0 done, 1 a file absent, undownloadable or mismatching its hash
(the message names it, the expected and the actual hash), 2 bad arguments (an unknown name).
"""

from __future__ import annotations

import argparse
import sys

PROG = "arn-lightning weights"
EXIT_ERROR = 1
EXIT_USAGE = 2


def _size_text(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.1f} MB"


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (subcommands ``list``, ``fetch``, ``verify``, ``path``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Pretrained weight files by name (detr-r50-coco, resnet50-imagenet, clip-vit-b32-openai): one "
        "cache folder, published hashes checked, never a hang on the network (docs/weights.md).",
    )
    dir_help = "the weights folder (default: $ARN_WEIGHTS_DIR, else torch.hub.get_dir()/checkpoints)"
    sub = parser.add_subparsers(dest="action", required=True, metavar="{list,fetch,verify,path}")
    listing = sub.add_parser("list", help="the registered weights and their state in the folder (no hashing)")
    listing.add_argument("--dir", default=None, help=dir_help)
    fetch = sub.add_parser("fetch", help="download NAME into the folder (if absent) and check its hash")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    fetch.add_argument("--dir", default=None, help=dir_help)
    fetch.add_argument("--timeout", type=float, default=None, help="seconds (default: $ARN_DOWNLOAD_TIMEOUT or 10)")
    verify = sub.add_parser("verify", help="check files against their published hashes (all present ones by default)")
    verify.add_argument("names", nargs="*", metavar="NAME")
    verify.add_argument("--dir", default=None, help=dir_help)
    path = sub.add_parser("path", help="print the verified path of NAME (exit 1 with instructions when absent)")
    path.add_argument("name", metavar="NAME")
    path.add_argument("--dir", default=None, help=dir_help)
    return parser


def _list(folder: str | None) -> int:
    from arn_lightning.weights import registry as weights

    base = weights.weights_dir(folder)
    rows = [("name", "file", "hash", "size", "state", "used by")]
    for entry in weights.list_entries():
        path = base / entry.file_name
        if not path.is_file():
            state = "absent"
        else:
            digest = weights.remembered_sha256(path)
            if digest is None:
                state = "present, not verified"
            else:
                state = "verified" if entry.matches(digest) else "MISMATCH"
        rows.append(
            (
                entry.name,
                entry.file_name,
                f"{entry.hash_kind} {entry.sha256}",
                _size_text(entry.size_bytes),
                state,
                entry.used_by,
            )  # fmt: skip
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    print(f"weights folder: {base}")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print("\nsha256-prefix: the leading hex digits torch.hub puts in the file name (no full hash is published).")
    print("state: from the verify cache; `arn-lightning weights verify` hashes files not verified yet.")
    return 0


def _fetch(names: list[str], folder: str | None, timeout_s: float | None) -> int:
    from arn_lightning.weights import registry as weights

    failed = False
    for name in names:
        try:
            print(weights.resolve(name, folder, timeout_s=timeout_s))
        except weights.WeightsUnavailable as error:
            print(f"{PROG} fetch: error: {error}", file=sys.stderr)
            failed = True
    return EXIT_ERROR if failed else 0


def _verify(names: list[str], folder: str | None) -> int:
    from arn_lightning.weights import registry as weights

    base = weights.weights_dir(folder)
    explicit = bool(names)
    if not explicit:
        names = [e.name for e in weights.list_entries() if (base / e.file_name).is_file()]
        if not names:
            print(f"no registered weight file is present in {base}")
            return 0
    failed = False
    for name in names:
        result = weights.verify(name, folder)
        stream = sys.stdout if result.ok else sys.stderr
        print(result.describe(), file=stream)
        failed = failed or not result.ok
    return EXIT_ERROR if failed else 0


def _path(name: str, folder: str | None) -> int:
    from arn_lightning.weights import registry as weights

    entry = weights.get_entry(name)
    result = weights.verify(name, folder)
    if not result.present:
        reason = "`weights path` never downloads (use `arn-lightning weights fetch`)"
        print(f"{PROG} path: error: {weights.by_hand_message(entry, result.path, reason)}", file=sys.stderr)
        return EXIT_ERROR
    if not result.ok:
        print(f"{PROG} path: error: {result.describe()}", file=sys.stderr)
        return EXIT_ERROR
    print(result.path)
    return 0


def main(argv: list[str]) -> int:
    """Run ``arn-lightning weights``; returns the exit code (0 done, 1 file problem, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from arn_lightning.weights import registry as weights

    requested = list(getattr(args, "names", None) or []) + ([args.name] if getattr(args, "name", None) else [])
    unknown = [name for name in requested if not weights.is_registered(name)]
    if unknown:
        parser.error(f"expected registered weights names ({', '.join(weights.names())}) but got {unknown}")
    try:
        if args.action == "list":
            return _list(args.dir)
        if args.action == "fetch":
            return _fetch(args.names, args.dir, args.timeout)
        if args.action == "verify":
            return _verify(args.names, args.dir)
        return _path(args.name, args.dir)
    except (OSError, ValueError) as error:  # an unreadable folder, a bad ARN_OFFLINE / timeout value
        print(f"{PROG} {args.action}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
