"""``python -m simulator``: the same server as ``manage.py simulator``, without Django."""

from __future__ import annotations

import argparse

from simulator.runner import Options, run


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m simulator", description="A simulated Moodle 5.1 REST endpoint."
    )
    add_arguments(parser)
    return Options(**vars(parser.parse_args(argv)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags, shared with the management command."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--state", metavar="FILE", help="load state from FILE and save it after every write")
    parser.add_argument("--token", metavar="VALUE", help="create this token (every function) for user wsuser")
    parser.add_argument(
        "--seed-users", type=int, default=0, metavar="N", help="seed N users, cohorts, courses"
    )
    parser.add_argument("--debug", action="store_true", help="debugging on: errors carry debuginfo")
    parser.add_argument("--control", action="store_true", help="enable the /_sim/ control API")
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--jitter-ms", type=float, default=0)
    parser.add_argument("--max-input-vars", type=int, default=5000)
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="share of calls given a transient error"
    )
    parser.add_argument(
        "--profile",
        choices=["flat", "moodle51"],
        default="flat",
        help="flat: latency-ms per call; moodle51: what a real Moodle 5.1 spends on each call (benchmarks)",
    )
    parser.add_argument(
        "--langs",
        default="en",
        metavar="CODES",
        help="installed language packs, comma-separated (default en)",
    )


if __name__ == "__main__":
    run(parse())
