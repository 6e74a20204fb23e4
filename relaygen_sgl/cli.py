"""The ``relaygen`` command line.  Each subcommand lives in the module it drives."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from relaygen_sgl.runtimes import DEFAULT_MAX_TOTAL_TOKENS


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-total-tokens",
        type=int,
        default=DEFAULT_MAX_TOTAL_TOKENS,
        help="KV-cache token cap per runtime (default: %(default)s)",
    )
    p.add_argument("--log-dir", default=None, help="where SGLang server logs go (default: a temp dir)")
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for each server to become healthy (default: %(default)s)",
    )


def _serve_runtimes(args: argparse.Namespace) -> int:
    from relaygen_sgl.runtimes import RuntimePair

    pair = RuntimePair(
        args.large,
        args.small,
        max_total_tokens=args.max_total_tokens,
        log_dir=args.log_dir,
        startup_timeout=args.startup_timeout,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with pair:
        info = {
            role: {
                "url": rt.url,
                "pid": rt.pid,
                "model": str(rt.model_path),
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

    p = sub.add_parser("serve-runtimes", help="start the large and small SGLang runtimes on CPU")
    p.add_argument("--large", required=True, help="HF folder of the large (reasoning) model")
    p.add_argument("--small", required=True, help="HF folder of the small (finishing) model")
    _add_runtime_args(p)
    p.set_defaults(func=_serve_runtimes)

    for register in _subcommands():
        register(sub)
    return parser


def _subcommands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands defined beside the code they drive."""
    from evals import demo
    from relaygen_sgl import server
    from relaygen_sgl.calibration import calibrate

    return [calibrate.add_parser, server.add_parser, demo.add_parser]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the runtimes a command started are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
