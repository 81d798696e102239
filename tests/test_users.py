"""The user store: Maildir++ counts by the S flag over every folder, what counts as a user,
removal that sees every folder, and no users folder created behind ``smtpkit init``'s back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smtpkit.errors import UserError
from smtpkit.users import (
    FolderCount,
    MailboxNotEmpty,
    MailCount,
    NoUsersFolder,
    UserInfo,
    UserStore,
    is_seen,
)

DOMAINS = ("example.org",)


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    (tmp_path / "users").mkdir()
    return UserStore(tmp_path / "users", DOMAINS)


def put(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"Subject: x\r\n\r\n")


@pytest.mark.parametrize(
    ("name", "seen"),
    [
        ("1700000000.M1P1Q1.host", False),  # just delivered: no info part yet
        ("1700000000.M1P1Q1.host:2,", False),  # looked at, no flag
        ("1700000000.M1P1Q1.host:2,S", True),
        ("1700000000.M1P1Q1.host:2,FRS", True),
        ("1700000000.M1P1Q1.host:2,FT", False),
        ("1700000000.M1P1Q1.host:2,ab", False),  # Dovecot keywords are lower case
        ("1700000000.M1P1Q1.host:1,S", False),  # "1," is the experimental info, not flags
        ("1700000000.M1P1Q1.host,S=1234:2,RS", True),  # Dovecot's size field before the info
        ("1700000000.M1P1Q1.host,S=1234", False),  # ... which is no flag
    ],
)
def test_seen_is_the_s_flag_of_the_info_part(name: str, seen: bool) -> None:
    assert is_seen(name) is seen


def test_counts_cover_every_folder_by_flag(store: UserStore) -> None:
    box = store.add("alice@example.org")
    put(box / "new", "1.M1P1Q1.h", "2.M1P1Q1.h")
    put(box / "cur", "3.M1P1Q1.h:2,S", "4.M1P1Q1.h:2,", "5.M1P1Q1.h:2,FRS")
    put(box / "tmp", "6.M1P1Q1.h")  # being delivered: not a message yet
    put(box / "cur", ".hidden")
    put(box / ".Archive" / "cur", "7.M1P1Q1.h:2,S", "8.M1P1Q1.h:2,S")
    put(box / ".Archive" / "new", "9.M1P1Q1.h")
    put(box / ".Archive.2024" / "cur", "10.M1P1Q1.h:2,RS")
    (box / ".Empty" / "cur").mkdir(parents=True)
    os.symlink(box / ".Archive", box / ".Linked")  # never counted through a link
    assert store.count("alice@example.org") == MailCount(
        (
            FolderCount("INBOX", new=3, seen=2),
            FolderCount("Archive", new=1, seen=2),
            FolderCount("Archive.2024", new=0, seen=1),
            FolderCount("Empty", new=0, seen=0),
        )
    )
    count = store.count("alice@example.org")
    assert (count.new, count.seen, count.total) == (4, 5, 9)
    assert count.describe() == "9 messages (5 in INBOX, 3 in Archive, 1 in Archive.2024)"
    assert store.count("Alice@Example.org") == count


def test_describe_one_and_none() -> None:
    assert MailCount((FolderCount("Sent", 1, 0),)).describe() == "1 message (1 in Sent)"
    assert MailCount((FolderCount("INBOX", 0, 0),)).describe() == "no messages"


def test_list_leaves_out_what_is_not_a_user(store: UserStore) -> None:
    users = store.users_dir
    box = store.add("bob@example.org")
    put(box / ".Sent" / "cur", "1.M1P1Q1.h:2,S")
    put(box / "new", "2.M1P1Q1.h")
    store.add("alice@example.org")
    for hidden in (".spool", ".adding.carol@example.org", ".removing.dave@example.org", ".x"):
        (users / hidden / "new").mkdir(parents=True)
    (users / "lost+found").mkdir()
    (users / "file@example.org").write_text("")
    os.symlink(box, users / "link@example.org")
    (users / "Upper@example.org").mkdir()  # no address spells itself this way
    assert store.addresses() == ["alice@example.org", "bob@example.org"]
    assert store.list() == [
        UserInfo(
            "alice@example.org", users / "alice@example.org", 0, 0, (FolderCount("INBOX", 0, 0),)
        ),
        UserInfo(
            "bob@example.org",
            users / "bob@example.org",
            1,
            1,
            (FolderCount("INBOX", 1, 0), FolderCount("Sent", 0, 1)),
        ),
    ]


def test_remove_sees_mail_in_a_subfolder_only(store: UserStore) -> None:
    box = store.add("alice@example.org")
    put(box / ".Archive" / "cur", "1.M1P1Q1.h:2,S", "2.M1P1Q1.h:2,S")
    with pytest.raises(MailboxNotEmpty) as caught:
        store.remove("alice@example.org")
    assert str(caught.value) == (
        "not removing alice@example.org: its mailbox holds 2 messages (2 in Archive) "
        "(use --force to remove it anyway)"
    )
    assert caught.value.count.total == 2
    assert (box / ".Archive" / "cur").is_dir()
    held = store.remove("alice@example.org", force=True)
    assert held.describe() == "2 messages (2 in Archive)"
    assert sorted(os.listdir(store.users_dir)) == []


def test_remove_an_empty_mailbox_and_leftovers(store: UserStore) -> None:
    store.add("alice@example.org")
    (store.users_dir / ".removing.alice@example.org" / "cur").mkdir(parents=True)
    assert store.remove("alice@example.org").total == 0
    assert sorted(os.listdir(store.users_dir)) == []
    with pytest.raises(UserError, match=r"^no such user: alice@example.org$"):
        store.remove("alice@example.org")


def test_no_users_folder_is_not_created(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users", DOMAINS)
    with pytest.raises(NoUsersFolder) as caught:
        store.add("alice@example.org")
    assert str(caught.value) == (
        f"no users folder at {tmp_path / 'users'} (run `smtpkit init` first)"
    )
    assert not (tmp_path / "users").exists()


def test_add_replaces_a_stale_staging_file(store: UserStore) -> None:
    (store.users_dir / ".adding.alice@example.org").write_text("crash leftover")
    box = store.add("alice@example.org")
    assert sorted(p.name for p in box.iterdir()) == ["cur", "new", "tmp"]
    assert sorted(os.listdir(store.users_dir)) == ["alice@example.org"]
    with pytest.raises(UserError, match=r"^user alice@example.org already exists"):
        store.add("ALICE@example.org")
