"""What the fuzz entry points share: the two engines and the command line.

Each entry point imports ``atheris`` from here, imports smtpkit under ``instrumented()``
(so libFuzzer sees which branches an input reached), and hands ``main`` its ``check``
(raises on a broken invariant) and its hypothesis strategy for inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # the hypothesis engine needs no atheris
    atheris = None

# Run from a checkout without installing: the package is next to this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Check = Callable[[bytes], None]


def instrumented() -> contextlib.AbstractContextManager[object]:
    """Around the imports of smtpkit: instrumented for atheris, plain otherwise."""
    if atheris is None:
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=["smtpkit"])  # type: ignore[no-any-return]


def _checked(check: Check) -> Check:
    """``check``, printing the input that broke it before the error goes on."""

    def run(data: bytes) -> None:
        try:
            check(data)
        except BaseException:
            print(f"failing input ({len(data)} bytes): {data!r}", file=sys.stderr)
            raise

    return run


def run_atheris(check: Check, seconds: float, extra: list[str]) -> int:
    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds)}", *extra], _checked(check))
    atheris.Fuzz()  # exits the process when the time is up
    return 0


def run_hypothesis(check: Check, inputs: Any, seconds: float, max_examples: int) -> int:
    from hypothesis import HealthCheck, given, settings

    count = [0]
    one = _checked(check)

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def batch(data: bytes) -> None:
        count[0] += 1
        one(data)

    started = time.monotonic()
    while time.monotonic() - started < seconds:
        batch()
    took = time.monotonic() - started
    print(f"hypothesis: {count[0]} inputs in {took:.0f}s, every invariant held")
    return 0


def main(
    doc: str,
    check: Check,
    inputs: Callable[[], Any],
    *,
    max_examples: int,
    argv: list[str] | None = None,
) -> int:
    """The command line of an entry point; ``inputs()`` builds its hypothesis strategy."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long (default 60)")
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("libfuzzer", nargs="*", help="after --: libFuzzer arguments (atheris)")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris is not None else "hypothesis"
    if engine == "atheris":
        if atheris is None:
            parser.error("atheris is not installed (pip install atheris)")
        return run_atheris(check, args.seconds, args.libfuzzer)
    return run_hypothesis(check, inputs(), args.seconds, max_examples)
