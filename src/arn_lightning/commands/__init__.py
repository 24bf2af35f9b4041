"""Tool subcommands of ``arn-lightning``; each module exposes ``main(argv: list[str]) -> int``."""
