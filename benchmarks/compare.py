"""This tree's smtpkit against another commit's, side by side, round by round.

``python3 -m benchmarks.compare REV`` checks ``REV`` out into a temporary git worktree and
starts two smtpkit servers, each with its default workers on a fresh data folder: one from
this tree, one from ``REV`` (its code first on ``PYTHONPATH``). The chosen shapes then run
with the servers taking turns, round by round, in an order reversed every round, as in
``benchmarks.run``; every round is verified (every accepted message is a file in ``new/``).
The result is each version's median and the ratio this/REV round by round, its median and
its worst round: on a shared machine whose speed drifts from one minute to the next, rounds
run seconds apart tell two versions apart where separate runs cannot.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as `python benchmarks/compare.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, BenchError  # noqa: E402
from benchmarks.report import paired_line, paired_ratios  # noqa: E402
from benchmarks.run import work_folder  # noqa: E402
from benchmarks.servers import find_program, make_smtpkit, raise_open_files_limit  # noqa: E402
from benchmarks.shapes import QUICK_DIVISOR, SHAPES, Shape, measure_servers, pick_shapes  # noqa: E402

__all__ = ["main"]

THIS = "this tree"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = ",".join(shape.name for shape in SHAPES)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("rev", help="the commit to compare with (anything git rev-parse takes)")
    parser.add_argument(
        "--shapes", default="1x1KB,20x1KB,100x1KB", help=f"comma-separated, from {names}"
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds per shape and version")
    parser.add_argument("--quick", action="store_true", help=f"counts / {QUICK_DIVISOR}")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the data folders")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per round")
    args = parser.parse_args(argv)
    try:
        shapes = pick_shapes(args.shapes)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.shape_list = [s.reduced(QUICK_DIVISOR) for s in shapes] if args.quick else shapes
    return args


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result.stdout.strip()


def compare(shapes: Sequence[Shape], rev: str, rounds: int, base: Path, timeout: float) -> str:
    """Measure this tree against ``rev``; return the report's text."""
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    other = f"{rev} ({commit[:7]})" if not commit.startswith(rev) else commit[:7]
    source = find_program("smtp-source")
    raise_open_files_limit()
    tree = base / "tree"
    _git("worktree", "add", "--detach", str(tree), commit)
    try:
        this = make_smtpkit(base / "this", None, max_connections=1000)
        that = make_smtpkit(base / "other", None, max_connections=1000)
        this.name, that.name = THIS, other
        # The other version's package comes first; the data folder (its cwd) holds none.
        that.env = {**os.environ, "PYTHONPATH": str(tree)}
        results = measure_servers([this, that], shapes, rounds, source, timeout)
    finally:
        _git("worktree", "remove", "--force", str(tree))
    return report(results, (THIS, other))


def report(results: dict[str, Any], pair: tuple[str, str]) -> str:
    paired = paired_ratios(results, pair)
    ours_name, theirs_name = pair
    lines = [
        f"| shape | {ours_name} msgs/s | {theirs_name} msgs/s "
        f"| {ours_name}/{theirs_name} (median of rounds) | worst round |",
        "|---|---|---|---|---|",
    ]
    for shape, entry in paired.items():
        ours, theirs = (results[name]["shapes"][shape]["median"] for name in pair)
        lines.append(
            f"| {shape} | {ours:,.0f} | {theirs:,.0f} "
            f"| {entry['median']:.3f} | {entry['min']:.3f} |"
        )
    line = paired_line(paired, pair)
    if line is not None:
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with work_folder(args.dir, keep=False) as base:
        try:
            print(compare(args.shape_list, args.rev, args.rounds, base, args.timeout))
        except BenchError as exc:
            print(f"compare: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
