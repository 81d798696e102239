"""The password file: Dovecot's passwd-file format with Argon2id hashes Dovecot verifies, lines
kept whole on rewrite, damaged lines skipped and reported, changes seen without a reload, the
same cost for unknown users, safe from several threads."""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import argon2
import pytest

from smtpkit import auth
from smtpkit.auth import (
    MAX_PASSWORD_BYTES,
    PasswordError,
    PasswordFile,
    PasswordFileError,
    check_password,
    hash_password,
)
from smtpkit.errors import UserError
from tests.conftest import need_program

PREFIX = "{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$"


@pytest.fixture
def passwd(tmp_path: Path) -> PasswordFile:
    return PasswordFile(tmp_path / "passwd", ("example.org", "example.net"))


def count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes each Argon2 verification is made against, in order."""
    seen: list[str] = []
    real = auth._matches

    def matches(encoded: str, secret: bytes) -> bool:
        seen.append(encoded)
        return real(encoded, secret)

    monkeypatch.setattr(auth, "_matches", matches)
    return seen


# --- the hash ---------------------------------------------------------------------------


def test_the_hash_is_argon2id_with_the_stated_costs() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith(PREFIX)
    params = argon2.extract_parameters(hashed.removeprefix("{ARGON2ID}"))
    assert (params.type, params.memory_cost, params.time_cost, params.parallelism) == (
        argon2.Type.ID,
        auth.ARGON2_MEMORY_KIB,
        auth.ARGON2_TIME_COST,
        1,
    )
    assert (params.salt_len, params.hash_len) == (16, 32)
    assert hash_password("correct horse") != hashed  # a fresh salt each time
    # The dummy an unknown user is verified against costs what a real hash costs.
    assert argon2.extract_parameters(auth._DUMMY_HASH) == params


def test_dovecot_verifies_what_smtpkit_writes_and_the_other_way_round(
    passwd: PasswordFile,
) -> None:
    doveadm = need_program("doveadm", "dovecot-core")
    hashed = hash_password("pâss wörd")
    right = subprocess.run(
        [doveadm, "pw", "-t", hashed, "-p", "pâss wörd"], capture_output=True, text=True, timeout=30
    )
    assert (right.returncode, right.stdout) == (0, f"{hashed} (verified)\n")
    wrong = subprocess.run(
        [doveadm, "pw", "-t", hashed, "-p", "pass word"], capture_output=True, text=True, timeout=30
    )
    assert wrong.returncode != 0
    assert "Password mismatch" in wrong.stderr
    # A hash of Dovecot's own making (its default costs) works for smtpkit too.
    made = subprocess.run(
        [doveadm, "pw", "-s", "ARGON2ID", "-p", "from dovecot"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    passwd.path.write_text(f"alice@example.org:{made.stdout.strip()}\n")
    assert passwd.verify("alice@example.org", "from dovecot")
    assert not passwd.verify("alice@example.org", "from Dovecot")


@pytest.mark.parametrize(
    ("password", "error"),
    [
        ("", "the password is empty"),
        (
            "é" * 513,
            f"the password is 1026 bytes long; at most {MAX_PASSWORD_BYTES} are allowed",
        ),
        ("a\x00b", "the password holds a NUL, CR or LF character, which no login can send"),
        ("a\rb", "the password holds a NUL, CR or LF character, which no login can send"),
        ("a\nb", "the password holds a NUL, CR or LF character, which no login can send"),
    ],
)
def test_unusable_passwords_are_refused(password: str, error: str) -> None:
    with pytest.raises(PasswordError) as caught:
        hash_password(password)
    assert str(caught.value) == error


def test_a_password_of_exactly_the_limit_is_fine() -> None:
    check_password("x" * MAX_PASSWORD_BYTES)


# --- set, remove, verify ----------------------------------------------------------------


def test_set_verify_remove(passwd: PasswordFile) -> None:
    assert not passwd.verify("alice@example.org", "secret")  # no file yet: nobody
    assert passwd.addresses() == set()
    assert passwd.set("Alice@Example.ORG", "secret") is False
    assert passwd.set("bob@example.net", "other") is False
    lines = passwd.path.read_text().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["alice@example.org", "bob@example.net"]
    assert all(line.split(":", 1)[1].startswith(PREFIX) for line in lines)
    assert passwd.path.stat().st_mode & 0o777 == 0o640
    assert passwd.verify("alice@example.org", "secret")
    assert passwd.verify("ALICE@example.org", b"secret")  # the SMTP side may pass bytes
    assert not passwd.verify("alice@example.org", "Secret")
    assert not passwd.verify("bob@example.net", "secret")
    assert passwd.has("alice@EXAMPLE.org")
    assert passwd.addresses() == {"alice@example.org", "bob@example.net"}
    assert passwd.set("alice@example.org", "new one") is True
    assert not passwd.verify("alice@example.org", "secret")
    assert passwd.verify("alice@example.org", "new one")
    assert passwd.remove("ALICE@example.org") is True
    assert passwd.remove("alice@example.org") is False
    assert not passwd.has("alice@example.org")
    assert [line.split(":", 1)[0] for line in passwd.path.read_text().splitlines()] == [
        "bob@example.net"
    ]
    assert sorted(os.listdir(passwd.path.parent)) == ["passwd"]  # no temporary file left


def test_the_mode_is_0640_whatever_the_umask(passwd: PasswordFile) -> None:
    old = os.umask(0o077)
    try:
        passwd.set("alice@example.org", "secret")
    finally:
        os.umask(old)
    assert passwd.path.stat().st_mode & 0o777 == 0o640


def test_addresses_outside_the_domains_are_refused(passwd: PasswordFile) -> None:
    with pytest.raises(UserError, match=r"^'x@elsewhere\.test' is not in a local domain"):
        passwd.set("x@elsewhere.test", "secret")
    with pytest.raises(UserError, match=r"^'no-at' is not a valid address"):
        passwd.remove("no-at")
    assert not passwd.path.exists()
    assert not passwd.verify("no-at", "secret")


def test_a_rewrite_keeps_every_other_line_and_the_users_own_fields(passwd: PasswordFile) -> None:
    bob = hash_password("bob's")
    kept = [
        "# users of example.org",
        "",
        f"bob@example.org:{bob}:::::userdb_quota_rule=*:storage=1G",
        "weird line without a colon",
    ]
    alice_extra = ":::::userdb_mail=maildir:~/Maildir"
    passwd.path.write_text(
        "\n".join([*kept[:3], f"alice@example.org:{{PLAIN}}old{alice_extra}", kept[3]]) + "\n"
    )
    assert passwd.set("alice@example.org", "new") is True
    lines = passwd.path.read_text().splitlines()
    assert lines[:3] == kept[:3]
    assert lines[4] == kept[3]
    name, hashed, *rest = lines[3].split(":", 2)
    assert (name, hashed.startswith(PREFIX), f":{rest[0]}") == (
        "alice@example.org",
        True,
        alice_extra,
    )
    assert passwd.verify("alice@example.org", "new")
    assert passwd.verify("bob@example.org", "bob's")


def test_set_replaces_every_spelling_of_the_address_in_place(passwd: PasswordFile) -> None:
    passwd.path.write_text(
        "carol@example.org:{PLAIN}c\n"
        "Alice@Example.org:{PLAIN}one\n"
        "dave@example.org:{PLAIN}d\n"
        "alice@example.org:{SHA512-CRYPT}$6$two\r\n"
    )
    passwd.set("alice@example.org", "three")
    lines = passwd.path.read_text().split("\n")
    assert [line.split(":", 1)[0] for line in lines] == [
        "carol@example.org",
        "alice@example.org",
        "dave@example.org",
        "",
    ]
    assert passwd.verify("alice@example.org", "three")
    assert passwd.remove("alice@example.org") is True
    assert passwd.path.read_text() == "carol@example.org:{PLAIN}c\ndave@example.org:{PLAIN}d\n"


def test_a_file_with_crlf_lines_keeps_them(passwd: PasswordFile) -> None:
    passwd.path.write_bytes(
        b"alice@example.org:{PLAIN}x:::::quota=1\r\nbob@example.org:{PLAIN}y\r\n"
    )
    passwd.set("alice@example.org", "secret")
    data = passwd.path.read_bytes()
    assert data.endswith(b":::::quota=1\r\nbob@example.org:{PLAIN}y\r\n")
    assert passwd.verify("alice@example.org", "secret")


# --- damaged lines ----------------------------------------------------------------------


def test_damaged_lines_are_skipped_and_reported_without_their_passwords(
    passwd: PasswordFile,
) -> None:
    good = hash_password("good")
    passwd.path.write_text(
        "\n".join(
            [
                f"alice@example.org:{good}",  # 1
                "# a comment",  # 2
                "",  # 3
                "hunter2",  # 4
                "Bob@example.org:" + good,  # 5
                "carol@example.org:{SHA512-CRYPT}$6$salt$hash",  # 6
                "dave@example.org:$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",  # 7
                "erin@example.org:{ARGON2ID}$argon2id$garbage",  # 8
                "frank@example.org:",  # 9
                "x@elsewhere.test:" + good,  # 10
                "bad address:" + good,  # 11
                f"alice@example.org:{hash_password('second')}",  # 12
                # 13: argon2i, which Dovecot knows but smtpkit does not verify
                "gina@example.org:{ARGON2I}$argon2i$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
                f"hank@example.org:{{argon2id}}{good.removeprefix('{ARGON2ID}')}",  # 14
            ]
        )
    )
    assert passwd.problems() == (
        "passwd line 4: no ':' (expected address:{ARGON2ID}hash)",
        "passwd line 5: 'Bob@example.org' must be written bob@example.org (as Dovecot looks it up)",
        "passwd line 6: carol@example.org: the password scheme {SHA512-CRYPT} is not one smtpkit "
        "verifies (expected {ARGON2ID}; set it again with smtpkit user passwd)",
        "passwd line 7: dave@example.org: the password has no scheme (expected {ARGON2ID}; set it "
        "with smtpkit user passwd)",
        "passwd line 8: erin@example.org: the password is no valid {ARGON2ID} hash",
        "passwd line 9: frank@example.org: the password field is empty",
        "passwd line 10: 'x@elsewhere.test' is not in a local domain (configured: example.org, "
        "example.net)",
        "passwd line 11: 'bad address' is not a valid address: spaces or control characters",
        "passwd line 12: alice@example.org is there again: Dovecot and smtpkit use line 1",
        "passwd line 13: gina@example.org: the password scheme {ARGON2I} is not one smtpkit "
        "verifies (expected {ARGON2ID}; set it again with smtpkit user passwd)",
    )
    assert passwd.addresses() == {"alice@example.org", "hank@example.org"}
    assert passwd.verify("alice@example.org", "good")
    assert not passwd.verify("alice@example.org", "second")  # the first line wins, as in Dovecot
    assert passwd.verify("hank@example.org", "good")  # scheme names ignore case, as in Dovecot
    for user in ("bob", "carol", "dave", "erin", "frank"):
        assert not passwd.verify(f"{user}@example.org", "good")
    assert not passwd.verify("x@elsewhere.test", "good")


def test_a_file_that_cannot_be_read_is_an_error_not_a_wrong_password(
    passwd: PasswordFile, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").write_text(f"alice@example.org:{hash_password('secret')}\n")
    passwd.path.symlink_to(tmp_path / "elsewhere")
    message = f"cannot read {passwd.path}: a symbolic link"
    for call in (
        lambda: passwd.verify("alice@example.org", "secret"),
        passwd.problems,
        passwd.addresses,
    ):
        with pytest.raises(PasswordFileError) as caught:
            call()
        assert str(caught.value) == message
    with pytest.raises(PasswordFileError) as caught:
        passwd.set("alice@example.org", "other")
    assert str(caught.value) == message


# --- timing, caching, threads -----------------------------------------------------------


def test_unknown_users_cost_one_verification_too(
    passwd: PasswordFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    passwd.path.write_text(
        f"alice@example.org:{hash_password('secret')}\ncarol@example.org:{{PLAIN}}x\n"
    )
    seen = count_verifications(monkeypatch)
    assert not passwd.verify("bob@example.org", "secret")  # no line
    assert not passwd.verify("carol@example.org", "x")  # a line smtpkit cannot use
    assert not passwd.verify("not an address", "secret")
    assert not passwd.verify("alice@example.org", "wrong")
    assert seen[:3] == [auth._DUMMY_HASH] * 3
    assert len(seen) == 4 and seen[3] != auth._DUMMY_HASH
    assert not passwd.verify("alice@example.org", "x" * (MAX_PASSWORD_BYTES + 1))
    assert len(seen) == 4  # refused by its length alone, whoever the user


def test_the_file_is_read_again_only_when_it_changed(
    passwd: PasswordFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    passwd.set("alice@example.org", "one")
    reads = 0
    real = PasswordFile._read

    def read(self: PasswordFile) -> tuple[bytes, os.stat_result]:
        nonlocal reads
        reads += 1
        return real(self)

    monkeypatch.setattr(PasswordFile, "_read", read)
    assert passwd.verify("alice@example.org", "one")
    assert passwd.verify("alice@example.org", "one")
    assert passwd.has("alice@example.org")
    assert reads == 1
    # Another process (`smtpkit user passwd`) rewrites the file: seen at the next login.
    PasswordFile(passwd.path).set("alice@example.org", "two")
    assert passwd.verify("alice@example.org", "two")
    assert not passwd.verify("alice@example.org", "one")
    # An edit in place, by hand, is seen as well.
    with passwd.path.open("a") as fh:
        fh.write(f"bob@example.org:{hash_password('three')}\n")
    assert passwd.verify("bob@example.org", "three")
    passwd.path.unlink()
    assert not passwd.verify("alice@example.org", "two")
    assert reads == 4


def test_each_version_gets_a_later_whole_second_so_that_dovecot_rereads_it(
    passwd: PasswordFile,
) -> None:
    # Dovecot compares only the size and the mtime in seconds; a new password keeps the size.
    versions = []
    for password in ("one", "two", "three"):
        passwd.set("alice@example.org", password)
        st = passwd.path.stat()
        versions.append((st.st_size, st.st_mtime_ns // 1_000_000_000))
    assert len({size for size, _ in versions}) == 1
    seconds = [second for _, second in versions]
    assert seconds == sorted(set(seconds))
    assert passwd.verify("alice@example.org", "three")


def test_verify_is_safe_from_many_threads_while_the_file_changes(passwd: PasswordFile) -> None:
    passwd.set("alice@example.org", "secret")
    stop = threading.Event()

    def rewrite() -> None:
        other = PasswordFile(passwd.path)
        n = 0
        while not stop.is_set():
            other.set(f"user{n % 3}@example.org", "x")
            n += 1

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(
                pool.map(lambda i: passwd.verify("alice@example.org", "secret"), range(16))
            )
    finally:
        stop.set()
        writer.join(timeout=30)
    assert results == [True] * 16


def test_concurrent_rewrites_lose_no_change(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: PasswordFile(path).set(f"user{i}@example.org", f"pw{i}"), range(8)))
    assert PasswordFile(path).addresses() == {f"user{i}@example.org" for i in range(8)}
