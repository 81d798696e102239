"""One command: smtpkit against aiosmtpd (durable Maildir) and smtp-sink, on loopback, and
as a relay against Postfix.

    python -m benchmarks.run [--quick] [--rounds 3] [--shapes 20x1KB,20x1MB] [--json PATH]
                             [--servers smtpkit,aiosmtpd,smtp-sink] [--smtpkit-workers N]
                             [--idle 10000] [--big] [--no-throughput] [--no-relay]
                             [--profile [TOOL]] [--metrics] [--dir DIR] [--keep]

The servers are started together, each on a fresh port and a fresh data folder, and driven
by Postfix's ``smtp-source`` at the shapes below, one server at a time: for each shape, round
by round, every server runs its round, in an order reversed every round. A round is the wall
time of one ``smtp-source`` run; after each round the Maildir is counted: every message sent
must be a file in ``new/``, else the run fails (exit 1). The table gives the median of the
rounds (min-max), the ratios, a disk probe (the storage ceiling) and the peak RSS of each
server's process tree; the line under it gives smtpkit/aiosmtpd round by round (paired:
round i of each ran seconds apart); the same goes to JSON. The relay row sends the same load
through smtpkit and through a throwaway Postfix, each delivering to an ``smtp-sink``: messages
relayed end to end per second, and their ratio.
``--idle N`` and ``--big`` add the memory checks, ``--profile`` where smtpkit's time goes,
``--metrics`` runs smtpkit with its Prometheus endpoint on (what counting costs).
Needs ``smtp-source``, ``smtp-sink`` and, for the relay row, Postfix itself and root (Debian:
``apt-get install postfix``), and aiosmtpd (``pip install -e '.[bench]'``).

The parts: ``servers`` (starting the servers, their processes and RSS), ``shapes`` (the
``smtp-source`` rounds and their verification), ``probes`` (disk probe, idle connections, the
big message), ``relay`` (the relay row, Postfix's instance), ``profiling`` (``--profile``),
``report`` (tables, notes, machine line, JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as `python benchmarks/run.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, BenchError  # noqa: E402
from benchmarks.probes import big_check, idle_check, run_probe  # noqa: E402
from benchmarks.profiling import TOOLS, SpyRecorder, cprofile_run, find_py_spy  # noqa: E402
from benchmarks.relay import RELAY_SHAPE, measure_relays  # noqa: E402
from benchmarks.report import (  # noqa: E402
    big_line,
    idle_line,
    machine_info,
    machine_line,
    paired_line,
    paired_ratios,
    profile_lines,
    relay_lines,
    table,
    throughput_notes,
    write_json,
)
from benchmarks.servers import (  # noqa: E402
    SERVERS,
    find_program,
    free_port,
    make_aiosmtpd,
    make_sink,
    make_smtpkit,
    raise_open_files_limit,
    smtpkit_accepts_workers,
)
from benchmarks.shapes import QUICK_DIVISOR, SHAPES, measure_servers, pick_shapes  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark smtpkit against aiosmtpd (durable Maildir) and smtp-sink.",
    )
    names = ",".join(s.name for s in SHAPES)
    parser.add_argument("--quick", action="store_true", help=f"counts / {QUICK_DIVISOR}, 1 round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per shape (default 3)")
    parser.add_argument("--shapes", default=names, help=f"comma-separated subset of {names}")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    parser.add_argument("--smtpkit-workers", type=int, default=None, metavar="N")
    parser.add_argument("--timeout", type=float, default=300.0, help="per smtp-source run (s)")
    parser.add_argument("--probe-seconds", type=float, default=None, help="default 5 (quick 1)")
    parser.add_argument("--idle", type=int, default=0, metavar="N", help="hold N idle sessions")
    parser.add_argument("--big", action="store_true", help="one 100 MB message vs the 10 MB limit")
    parser.add_argument("--big-mb", type=int, default=100, help="size of the --big message (MiB)")
    parser.add_argument("--no-throughput", action="store_true", help="only --idle / --big")
    parser.add_argument(
        "--no-relay", action="store_true", help="skip the relay row (smtpkit vs Postfix)"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="auto",
        default=None,
        choices=TOOLS,
        metavar="TOOL",
        help="where smtpkit's time goes in the 1 KB shapes: py-spy if installed, else "
        "cProfile (TOOL: auto, py-spy or cprofile)",
    )
    parser.add_argument(
        "--metrics", action="store_true", help="smtpkit with [metrics] listen on (loopback)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="parent of the data folders")
    parser.add_argument("--keep", action="store_true", help="keep the data folders")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    args = parser.parse_args(argv)
    try:
        args.shape_list = pick_shapes(args.shapes)
    except ValueError as exc:
        parser.error(str(exc))
    args.relay_shape = RELAY_SHAPE
    if args.quick:
        args.shape_list = [s.reduced(QUICK_DIVISOR) for s in args.shape_list]
        args.relay_shape = RELAY_SHAPE.reduced(QUICK_DIVISOR)
    servers = [n.strip() for n in args.servers.split(",") if n.strip()]
    bad = [n for n in servers if n not in SERVERS]
    if bad:
        parser.error(f"unknown server {bad[0]!r}; choose from {','.join(SERVERS)}")
    args.server_list = [n for n in SERVERS if n in servers]
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.probe_seconds is None:
        args.probe_seconds = 1.0 if args.quick else 5.0
    if args.profile == "py-spy" and find_py_spy() is None:
        parser.error("--profile py-spy: py-spy is not installed (pip install py-spy)")
    return args


@contextlib.contextmanager
def work_folder(parent: Path | None, keep: bool) -> Iterator[Path]:
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="smtpkit-bench-", dir=parent))
    try:
        yield folder
    finally:
        if keep:
            print(f"data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def profiled(args: argparse.Namespace) -> bool:
    """Whether ``--profile`` has something to profile; says why not when it has not."""
    if not args.profile:
        return False
    if args.no_throughput or "smtpkit" not in args.server_list:
        print("note: --profile profiles smtpkit's throughput rounds; none run here")
        return False
    if not any(shape.small for shape in args.shape_list):
        print("note: --profile profiles the 1 KB shapes; none is among --shapes")
        return False
    return True


def run(args: argparse.Namespace, base: Path, report: dict[str, Any]) -> None:
    open_files = raise_open_files_limit()
    report["machine"] = machine_info(base)
    print("machine:", machine_line(report["machine"]), flush=True)
    workers: int | None = None
    if args.smtpkit_workers is not None:
        if smtpkit_accepts_workers(base):
            workers = args.smtpkit_workers
        else:
            print("note: `smtpkit serve` has no --workers option; --smtpkit-workers ignored")
    report["smtpkit_workers"] = workers if workers is not None else "default"
    # --metrics: every hook counts into prometheus_client's files, as in production with
    # an endpoint configured (nothing scrapes it during the rounds).
    tables = {"metrics": {"listen": f"127.0.0.1:{free_port()}"}} if args.metrics else None
    report["smtpkit_metrics"] = args.metrics

    throughput = not args.no_throughput and bool(args.shape_list)
    relay = not args.no_throughput and not args.no_relay
    source = find_program("smtp-source") if throughput or relay else ""
    if throughput:
        if "aiosmtpd" in args.server_list and importlib.util.find_spec("aiosmtpd") is None:
            raise BenchError("aiosmtpd is not installed: pip install -e '.[bench]'")
        profile = profiled(args)
        spy: SpyRecorder | None = None
        if profile and args.profile != "cprofile" and (program := find_py_spy()) is not None:
            spy = SpyRecorder(program, base / "py-spy")
        run_probe(base, args.probe_seconds, report, "before")
        factories = {
            "smtpkit": lambda: make_smtpkit(base, workers, max_connections=1000, tables=tables),
            "aiosmtpd": lambda: make_aiosmtpd(base),
            "smtp-sink": lambda: make_sink(base),
        }
        servers = [factories[name]() for name in args.server_list]
        report["servers"].update(
            measure_servers(
                servers, args.shape_list, args.rounds, source, args.timeout, profiler=spy
            )
        )
        report["paired"] = paired_ratios(report["servers"])
        run_probe(base, args.probe_seconds, report, "after")
        if profile:
            if spy is not None and spy.files:
                report["profile"] = spy.summary()
                if spy.error:
                    report["profile"]["note"] = spy.error
            else:
                if spy is not None:
                    print(f"note: {spy.error}; profiling with cProfile instead", flush=True)
                report["profile"] = cprofile_run(base, args.shape_list, source, args.timeout)
    if relay:
        report["relay"] = measure_relays(
            base, args.relay_shape, args.rounds, source, args.timeout, workers, args.keep
        )
    if throughput or relay:
        print()
    if throughput:
        print(table(report, args.shape_list))
        report["table"] = table(report, args.shape_list)
        paired = paired_line(report["paired"])
        if paired is not None:
            print(paired)
    if relay:
        lines = relay_lines(report["relay"])
        report["relay"]["table"] = "\n".join(lines[:3])
        if throughput:
            print()
        for line in lines:
            print(line)
    if throughput:
        for line in throughput_notes(report):
            print(line)
        if "profile" in report:
            print()
            for line in profile_lines(report["profile"]):
                print(line)

    if args.idle:
        print(f"idle: opening {args.idle} connections to smtpkit ...", flush=True)
        idle = idle_check(base, args.idle, workers, open_files)
        report["idle"] = idle
        print(idle_line(idle))
    if args.big:
        big = big_check(base, args.big_mb, workers)
        report["big"] = big
        print(big_line(big))
    print("machine:", machine_line(report["machine"]))
    if relay and "error" in report["relay"]["postfix"]:
        # Like a missing peer in the other rows, but only once everything else has run.
        reason = report["relay"]["postfix"]["error"].splitlines()[0]
        raise BenchError(f"relay: Postfix was not measured: {reason} (--no-relay skips it)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "rounds": args.rounds,
        "servers": {},
    }
    status = 0
    began = time.monotonic()
    with work_folder(args.dir, args.keep) as base:
        try:
            run(args, base, report)
        except BenchError as exc:
            print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
            report["error"] = str(exc)
            status = 1
        except KeyboardInterrupt:
            report["error"] = "interrupted"
            status = 130
    report["seconds"] = round(time.monotonic() - began, 1)
    write_json(args.json, report)
    print(f"results written to {args.json} ({report['seconds']} s)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
