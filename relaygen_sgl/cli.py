"""The ``relaygen`` command line.  Each subcommand lives in the module it drives."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from relaygen_sgl.launch_options import LaunchError
from relaygen_sgl.pair_args import add_runtime_args, pair_from_args
from relaygen_sgl.problem_sets.problem import DatasetError
from relaygen_sgl.profile import ProfileError
from relaygen_sgl.runtime.pool import PoolStartError
from relaygen_sgl.runtime.server import RuntimeStartError


def _serve_runtimes(args: argparse.Namespace) -> int:
    pair = pair_from_args(args, args.large, args.small)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with pair:
        print(json.dumps({"large": pair.large.describe(), "small": pair.small.describe()}), flush=True)
        try:
            while not stop.wait(1.0):
                if (why := pair.dead()) is not None:
                    print(f"{why}; stopping", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relaygen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "serve-runtimes",
        help="start the large and small SGLang runtimes (CPU or CUDA)",
        description="Start both SGLang runtimes of a pair (with --large-replicas/--small-replicas: that "
        "many workers per model and an sglang-router in front of several), print one JSON line with "
        "their URLs and PIDs, and serve until Ctrl-C or SIGTERM (everything is stopped by PID).",
    )
    p.add_argument("--large", required=True, help="HF folder of the large (reasoning) model")
    p.add_argument("--small", required=True, help="HF folder of the small (finishing) model")
    add_runtime_args(p)
    p.set_defaults(func=_serve_runtimes)

    for register in _subcommands():
        register(sub)
    return parser


def _subcommands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands defined beside the code they drive."""
    from relaygen_sgl import demo
    from relaygen_sgl.calibration import calibrate
    from relaygen_sgl.serving import app as server

    return [calibrate.add_parser, server.add_parser, demo.add_parser]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The package's own lines (runtime faults, 5xx answers, processes started) from INFO; other
    # libraries' (httpx logs every request at INFO) from WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("relaygen_sgl").setLevel(logging.INFO)
    # SIGTERM unwinds like Ctrl-C, so the runtimes a command started are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return int(args.func(args) or 0)
    # Configuration, start-up, profile and input-set faults: one line naming what and where.
    except (
        LaunchError,
        RuntimeStartError,
        PoolStartError,
        ProfileError,
        DatasetError,
        FileNotFoundError,
    ) as e:
        print(f"relaygen {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
