"""Names that must not meet across the nodes of a cluster: queue entries and Maildir-style
file names, also for nodes on one machine (one host name, one pid space) or in containers
that share a host name."""

from __future__ import annotations

import os
import re
import socket

from smtpkit.delivery.queue import entry_name, set_node
from smtpkit.fsutil import unique_name


def test_names_differ_between_nodes_on_one_machine() -> None:
    """Queue entries are tagged with server.hostname, not the machine's name; Maildir-style
    names carry a random part per process, drawn again after a fork."""
    try:
        set_node("mx1.example.org")
        first = entry_name("abc.1")
        set_node("mx2.example.org")
        second = entry_name("abc.1")
    finally:
        set_node(socket.gethostname())
    assert first.startswith("abc.1-") and second.startswith("abc.1-") and first != second
    assert re.fullmatch(r"\d+\.M\d+P\d+Q\d+R[0-9a-f]{8}\..+", unique_name())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, unique_name().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    os.close(read)
    os.close(write)

    def random_part(name: str) -> str:
        found = re.search(r"Q\d+R([0-9a-f]{8})\.", name)
        assert found is not None, name
        return found.group(1)

    assert random_part(child) != random_part(unique_name())
    # The pid is drawn once per process too, and again in the child.
    assert f"P{pid}Q" in child
    assert f"P{os.getpid()}Q" in unique_name()
    assert random_part(unique_name()) == random_part(unique_name())  # one per process
