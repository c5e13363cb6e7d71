"""The ``wanpy`` command line: info, preflight, generate, probe, demo.

User errors print one clear line (no traceback) and exit non-zero; ``--verbose``
shows sd.cpp's log.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

EXIT_USAGE = 2


def _cmd_info(args: argparse.Namespace) -> int:
    import wanpy

    print(wanpy.system_info())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wanpy",
        description="Wan2.1/Wan2.2 video generation on stable-diffusion.cpp, in-process.",
        epilog="examples:\n  wanpy info\n  wanpy demo -o demo.webm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show sd.cpp's and ggml's log")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="backend compiled in, sd.cpp version, devices and their limits, "
                          "environment report",
                          description="What this build is and what its devices can really do.",
                          epilog="example:\n  GGML_VK_VISIBLE_DEVICES=0 wanpy info",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("wanpy: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"wanpy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # wanpy errors: one line, no traceback
        from wanpy.errors import WanpyError

        if isinstance(exc, WanpyError):
            print(f"wanpy: error: {exc}", file=sys.stderr)
            return 1
        raise
