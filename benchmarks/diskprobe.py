"""Disk probe: how many durable 1 KB file creations per second this folder's disk allows.

Each creation follows the same recipe as the durable servers under test: create a new file in
``tmp/`` (``O_CREAT|O_EXCL``, mode 0600), write 1 KB, ``fsync`` it, rename it into ``new/`` and
``fsync`` the ``new/`` folder. Run from 1 thread and from 4 threads, this is the storage
ceiling a one-file-per-message server is measured against.

    python -m benchmarks.diskprobe [--dir DIR] [--seconds 5] [--threads 1,4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProbeResult", "probe"]

PAYLOAD = b"x" * 1023 + b"\n"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    threads: int
    files: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else 0.0


def _create_durably(tmp: Path, new: Path, name: str, payload: bytes) -> None:
    source = tmp / name
    fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(source, new / name)
    # The rename is durable only once the folder holding the new name is flushed too.
    folder = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def probe(
    folder: Path,
    threads: int,
    seconds: float,
    payload: bytes = PAYLOAD,
    *,
    keep: bool = False,
) -> ProbeResult:
    """Create fsync'd files in ``folder`` from ``threads`` threads for about ``seconds``.

    A fresh ``probe-*`` subfolder holds the work; it is removed afterwards unless ``keep``.
    Keeping it matters inside a longer benchmark: ext4 skips inodes freed in the last minutes
    when it allocates new ones (``recently_deleted``), so thousands of files deleted just
    before a server's rounds make every file that server creates cost more.
    """
    work = Path(tempfile.mkdtemp(prefix="probe-", dir=folder))
    tmp, new = work / "tmp", work / "new"
    tmp.mkdir()
    new.mkdir()
    counts = [0] * threads
    errors: list[BaseException] = []
    start_line = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        start_line.wait()
        n = 0
        try:
            while time.monotonic() < stop_at[0]:
                _create_durably(tmp, new, f"{index}.{n}", payload)
                n += 1
        except BaseException as exc:  # reported by the caller, never swallowed
            errors.append(exc)
        counts[index] = n

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    began = time.monotonic()
    stop_at[0] = began + seconds
    start_line.wait()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - began
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    if errors:
        raise errors[0]
    return ProbeResult(threads=threads, files=sum(counts), seconds=elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", default="1,4", help="comma-separated thread counts")
    args = parser.parse_args(argv)
    for count in (int(t) for t in args.threads.split(",")):
        result = probe(args.dir, count, args.seconds)
        print(
            f"{result.threads} thread(s): {result.per_second:,.0f} fsync'd files/s "
            f"({result.files} in {result.seconds:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
