"""Command line: ``anyedit edit | demo | ask | apply | stack | stats | presets | eval | sweep | report``.

The only place that parses argv, reads the environment and configures logging. One module per command group
(:mod:`.editing`, :mod:`.evaluating`) over shared argument groups (:mod:`.options`). Bad input prints one line
``anyedit: error: ...`` to stderr and exits with status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys

from .._version import __version__
from ..errors import AnyEditError
from . import editing, evaluating
from .options import setup_logging

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anyedit", description="Edit long-form knowledge inside a language model "
                                "(AnyEdit chunked editing). Default model: SmolLM2-135M-Instruct, embedded.")
    p.add_argument("--version", action="version", version=f"anyedit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    editing.add_commands(sub)
    evaluating.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    try:
        return int(args.func(args) or 0)
    except AnyEditError as e:
        print(f"anyedit: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("anyedit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
