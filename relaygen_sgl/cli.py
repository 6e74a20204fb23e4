"""The ``relaygen`` command line.  Each subcommand lives in the module it drives."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from relaygen_sgl.launch_options import LaunchError
from relaygen_sgl.pair_args import add_runtime_args, pair_from_args
from relaygen_sgl.runtimes import RuntimeStartError


def _serve_runtimes(args: argparse.Namespace) -> int:
    pair = pair_from_args(args, args.large, args.small)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with pair:
        info = {
            role: {
                "url": rt.url,
                "pid": rt.pid,
                "model": str(rt.model_path),
                "device": rt.device,
                "log": str(rt.log_path),
            }
            for role, rt in (("large", pair.large), ("small", pair.small))
        }
        print(json.dumps(info), flush=True)
        try:
            while not stop.wait(1.0):
                for rt in (pair.large, pair.small):
                    if rt.proc is not None and rt.proc.poll() is not None:
                        print(f"runtime {rt.name} exited; stopping", file=sys.stderr)
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
        description="Start both SGLang runtimes of a pair, print one JSON line with their URLs and "
        "PIDs, and serve until Ctrl-C or SIGTERM (both are stopped by PID).",
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
    from evals import demo
    from relaygen_sgl.calibration import calibrate
    from relaygen_sgl.serving import app as server

    return [calibrate.add_parser, server.add_parser, demo.add_parser]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the runtimes a command started are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return int(args.func(args) or 0)
    except (LaunchError, RuntimeStartError, FileNotFoundError) as e:
        # Configuration and start-up faults: the message says what and which runtime; no traceback.
        print(f"relaygen {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
