"""A hand-edited config whose listen addresses cannot all be bound: every command refuses
it with the loader's one line naming the key, before serve binds anything (and reads
"address already in use", which blames another mail server)."""

from __future__ import annotations

import json
import socket
import tomllib
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import make_server, smtpkit


@pytest.mark.timeout(60)
def test_serve_and_check_refuse_an_address_listed_twice(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    data = tomllib.loads(server.config.read_text())
    address = f"127.0.0.1:{server.port}"
    data["server"]["listen"] = [address, address]
    server.config.write_text(tomli_w.dumps(data))
    text = f"server -> listen: {address} is listed twice ({server.config})"

    served = smtpkit("serve", config=server.config, check=False)
    assert (served.returncode, served.stderr.splitlines()) == (1, [f"Error: {text}"])
    # Nothing was bound: the port is still free.
    with socket.socket() as probe:
        probe.bind((server.host, server.port))
    checked = smtpkit("check", "--json", config=server.config, check=False)
    assert checked.returncode == 1
    assert [json.loads(line) for line in checked.stdout.splitlines()] == [
        {"fatal": True, "note": False, "text": text}
    ]
    listed = smtpkit("user", "list", config=server.config, check=False)
    assert (listed.returncode, listed.stderr.splitlines()) == (1, [f"Error: {text}"])
