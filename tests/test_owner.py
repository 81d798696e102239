"""The data folder's owner: looked up from the folder, taken on for writes, dropped to."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from smtpkit.owner import OwnerError, as_owner, lookup_user, owner_of
from tests.conftest import unavailable

NOBODY = pwd.getpwnam("nobody")


def test_lookup_by_name_and_uid() -> None:
    assert lookup_user("nobody").uid == NOBODY.pw_uid
    assert lookup_user(str(NOBODY.pw_uid)).name == "nobody"
    with pytest.raises(OwnerError, match=r"^no such user: 'no-such-user-here' \(create it"):
        lookup_user("no-such-user-here")


def test_files_written_as_the_owner_belong_to_the_owner(open_tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("taking another identity needs root (CI runs as root)")
    tmp_path = open_tmp_path
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    os.chown(data, NOBODY.pw_uid, NOBODY.pw_gid)
    assert owner_of(data).name == "nobody"
    with as_owner(data) as owner:
        assert (os.geteuid(), os.getegid(), os.getgroups()) == (owner.uid, owner.gid, [])
        (data / "made-by-owner").write_text("x")
        # Root's files stay out of reach inside the block.
        with pytest.raises(PermissionError):
            (tmp_path / "root-only").write_text("x")
    assert os.geteuid() == 0 and os.getegid() == 0
    made = (data / "made-by-owner").stat()
    assert (made.st_uid, made.st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)


def test_as_owner_changes_nothing_for_a_root_owned_folder(tmp_path: Path) -> None:
    before = (os.geteuid(), os.getegid())
    with as_owner(tmp_path):
        assert (os.geteuid(), os.getegid()) == before


def test_drop_to_is_for_good(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("dropping privileges needs root (CI runs as root)")
    code = (
        "import os; from smtpkit.owner import drop_to, lookup_user; "
        "drop_to(lookup_user('nobody')); print(os.getresuid(), os.getresgid(), os.getgroups());"
        "\ntry:\n os.setuid(0)\nexcept PermissionError:\n print('cannot go back')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    assert out.stdout.splitlines() == [
        f"({uid}, {uid}, {uid}) ({gid}, {gid}, {gid}) []",
        "cannot go back",
    ]
