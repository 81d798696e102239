"""``smtpkit sendmail`` and ``smtpkit-sendmail``: the invocations real programs use (Debian's
cron, bsd-mailx, PHP's mail(), git send-email), -t, the headers added, and sysexits.h
exit codes; and, as root, a drop by an ordinary user that other users cannot touch.

``smtpkit-sendmail`` runs as a subprocess through its entry point (``main()``), with the
near-empty environment cron gives it; ``smtpkit sendmail`` through click's CliRunner.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
import subprocess
import sys
from email import policy
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from smtpkit import maildrop
from smtpkit.commands import cli
from smtpkit.maildrop import DropEnvelope, ensure_maildrop, pending, read
from smtpkit.sendmail_main import Invocation, UsageError, parse_arguments
from tests.conftest import unavailable

HOSTNAME = "mx.example.org"
ENTRY = "from smtpkit.sendmail_main import main; main()"
SERVICE = 54320  # the data folder's owner: a uid with no user
STRANGER = 54321


class Site:
    """A data folder with its config and maildrop."""

    def __init__(self, folder: Path, *, limits: str = "", make_maildrop: bool = True) -> None:
        self.directory = folder / "data"
        self.config = folder / "etc" / "smtpkit.toml"
        result = CliRunner().invoke(
            cli,
            [
                "-c", str(self.config), "init", str(self.directory),
                "--domain", "example.org", "--hostname", HOSTNAME,
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        if limits:
            with self.config.open("a") as fh:
                fh.write(f"\n[limits]\n{limits}\n")
        self.maildrop = self.directory / "maildrop"
        if make_maildrop:
            ensure_maildrop(self.directory)
        else:  # as before init made it: no maildrop, a data folder nobody else may pass
            self.maildrop.rmdir()
            self.directory.chmod(0o750)

    def dropped(self) -> list[tuple[DropEnvelope, bytes]]:
        found = []
        for path in pending(self.maildrop):
            with read(path, max_size=10 * 1024 * 1024) as drop:
                found.append((drop.envelope, b"".join(drop.chunks())))
        return found

    def one(self) -> tuple[DropEnvelope, bytes]:
        [only] = self.dropped()
        return only

    def nothing_left(self) -> bool:
        return not self.maildrop.exists() or os.listdir(self.maildrop) == []


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def script(
    config: Path | None, *args: str, stdin: bytes = b"", user: str | None = None, python: str = ""
) -> subprocess.CompletedProcess[bytes]:
    """The real ``smtpkit-sendmail`` (its entry point), as cron runs it: no environment
    but PATH (and the config's location)."""
    env = {"PATH": "/usr/bin:/bin"}
    if config is not None:
        env["SMTPKIT_CONFIG"] = str(config)
    return subprocess.run(
        [python or sys.executable, "-c", ENTRY, *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
        **(as_user(user) if user else {}),
    )


def as_user(name: str) -> dict[str, Any]:
    """subprocess arguments to run as ``name`` only: its uid and group, no other group."""
    entry = pwd.getpwnam(name)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": "/"}


def subcommand(config: Path, *args: str, stdin: bytes = b"") -> Result:
    """``smtpkit -c CONFIG sendmail ARGS``, through the root group."""
    return CliRunner().invoke(cli, ["-c", str(config), "sendmail", *args], input=stdin)


def headers(message: bytes) -> dict[str, list[str]]:
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    found: dict[str, list[str]] = {}
    for line in head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n"):
        name, _, value = line.partition(":")
        found.setdefault(name.lower(), []).append(value.strip())
    return found


def body(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[1]


# --- what real programs send ----------------------------------------------------------------

CRON_MESSAGE = (
    b"From: root (Cron Daemon)\n"
    b"To: root\n"
    b"Subject: Cron <root@host> /usr/local/bin/backup\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=UTF-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"X-Cron-Env: <SHELL=/bin/sh>\n"
    b"X-Cron-Env: <HOME=/root>\n"
    b"\n"
    b"backup: 3 files\n"
    b".\n"
    b"a line after a lone dot (-i keeps it)\n"
)


def test_debian_cron(site: Site) -> None:
    done = script(
        site.config, "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-oi", "-t", stdin=CRON_MESSAGE
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    envelope, message = site.one()
    assert envelope == DropEnvelope(
        recipients=("root",), full_name="CronDaemon", extract_recipients=True, ignore_dots=True
    )
    found = headers(message)
    assert found["from"] == ["root (Cron Daemon)"]  # kept: -F names only a From: we add
    assert found["x-cron-env"] == ["<SHELL=/bin/sh>", "<HOME=/root>"]
    assert found["message-id"][0].endswith(f"@{HOSTNAME}>")
    assert len(found["date"]) == 1
    assert body(message) == b"backup: 3 files\r\n.\r\na line after a lone dot (-i keeps it)\r\n"


def test_bsd_mailx(site: Site) -> None:
    done = script(
        site.config, "-i", "--", "alice@example.org",
        stdin=b"Subject: disk\nTo: alice@example.org\n\nalmost full\n",
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, b"")
    envelope, message = site.one()
    assert envelope == DropEnvelope(recipients=("alice@example.org",), ignore_dots=True)
    assert message.startswith(
        b"Subject: disk\r\nTo: alice@example.org\r\n"
        b"From: root <root@" + HOSTNAME.encode() + b">\r\nDate: "
    )
    assert body(message) == b"almost full\r\n"


def test_php_mail(site: Site) -> None:
    # PHP's mail() pipes "To:" and "Subject:" and the extra headers, with CRLF since PHP 8,
    # into its sendmail_path, "sendmail -t -i".
    php = (
        b"To: alice@example.org\r\n"
        b"Subject: Your order\r\n"
        b"From: shop@example.org\r\n"
        b"Cc: Bob <bob@example.org>\r\n"
        b"\r\n"
        b"Thank you.\n"
    )
    done = subcommand(site.config, "-t", "-i", stdin=php)
    assert (done.exit_code, done.output) == (0, "")
    envelope, message = site.one()
    assert envelope.recipients == ("alice@example.org", "bob@example.org")
    assert headers(message)["from"] == ["shop@example.org"]
    assert body(message) == b"Thank you.\r\n"


def test_git_send_email(site: Site) -> None:
    patch = (
        b"From: Alice <alice@example.org>\n"
        b"To: bob@example.net\n"
        b"Cc: carol@example.com\n"
        b"Subject: [PATCH] fix\n"
        b"Date: Mon, 30 Nov 2026 04:00:00 +0000\n"
        b"Message-ID: <20261130040000.1-1-alice@example.org>\n"
        b"\n"
        b"---\n"
        b" a | 1 +\n"
        b".\n"
        b"-- \n"
        b"2.47.0\n"
    )
    done = script(site.config, "-i", "bob@example.net", "carol@example.com", stdin=patch)
    assert (done.returncode, done.stderr) == (0, b"")
    envelope, message = site.one()
    assert envelope == DropEnvelope(
        recipients=("bob@example.net", "carol@example.com"), ignore_dots=True
    )
    assert message == patch.replace(b"\n", b"\r\n")  # nothing added, nothing lost


def test_options_after_recipients_and_both_forms_of_f(site: Site) -> None:
    assert (
        script(site.config, "alice@example.org", "-f", "root@example.org", "-FAdmin").returncode
        == 0
    )
    assert script(site.config, "-fbounces@example.org", "alice@example.org").returncode == 0
    assert script(site.config, "-f", "<>", "alice@example.org").returncode == 0
    senders = sorted((e.sender or "", e.full_name or "") for e, _ in site.dropped())
    assert senders == [("", ""), ("bounces@example.org", ""), ("root@example.org", "Admin")]


# --- DSN requests (-N, -R, -V) -------------------------------------------------------------------


def test_dsn_options_are_dropped_with_the_message(site: Site) -> None:
    done = script(
        site.config, "-i", "-N", "success,failure", "-R", "hdrs", "-V", "nightly+42=ok",
        "alice@example.org", "root", stdin=b"Subject: report\n\ndone\n",
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    [path] = pending(site.maildrop)
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b"smtpkit-maildrop 2"
    assert lines[5] == (
        b'dsn {"notify": ["SUCCESS", "FAILURE"], "ret": "HDRS", "envid": "nightly+42=ok"}'
    )
    envelope, message = site.one()
    assert envelope == DropEnvelope(
        recipients=("alice@example.org", "root"),
        ignore_dots=True,
        notify=frozenset({"SUCCESS", "FAILURE"}),
        ret="HDRS",
        envid="nightly+42=ok",
    )
    assert body(message) == b"done\r\n"


def test_dsn_options_of_the_subcommand_and_with_t(site: Site) -> None:
    done = subcommand(
        site.config, "-t", "-Nnever", stdin=b"To: alice@example.org\nCc: x@example.net\n\nhi\n"
    )
    assert (done.exit_code, done.output) == (0, "")
    envelope, _ = site.one()
    # -N is every recipient's, whether named or taken from the headers.
    assert envelope.recipients == ("alice@example.org", "x@example.net")
    assert (envelope.notify, envelope.ret, envelope.envid) == (frozenset({"NEVER"}), None, None)


def test_without_dsn_options_the_drop_is_version_1(site: Site) -> None:
    assert script(site.config, "alice@example.org", stdin=b"hi\n").returncode == 0
    [path] = pending(site.maildrop)
    assert path.read_bytes().startswith(b"smtpkit-maildrop 1\nsender null\n")
    assert b"\ndsn " not in path.read_bytes()


def test_a_drop_without_dsn_options_does_not_load_the_smtp_engine() -> None:
    # Cron runs sendmail for every message: smtpkit.protocol (the whole engine, through
    # its package) is loaded only for -N, -R or -V.
    probe = (
        "import sys, smtpkit.sendmail_main as m\n"
        "print(sorted(n for n in sys.modules if n.startswith('smtpkit.protocol')))\n"
        "m.parse_arguments(['-V', 'x', 'a@x'])\n"
        "print('smtpkit.protocol.dsn' in sys.modules)\n"
        "from smtpkit.protocol.dsn import MAX_ENVID\n"
        "print(m.MAX_ENVID == MAX_ENVID)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "[]\nTrue\nTrue\n"


def test_help_names_the_dsn_options(site: Site) -> None:
    done = script(site.config, "--help")
    assert done.returncode == 0
    text = done.stdout.decode()
    assert "  -N DSN      delivery status notifications (RFC 3461 NOTIFY)" in text
    assert "  -R RET      " in text and "  -V ENVID    " in text
    # No longer among the options accepted and ignored.
    ignored = text.split("Accepted and ignored", 1)[1].split("Exit status", 1)[0]
    assert "-N" not in ignored and "-R" not in ignored and "-V" not in ignored


# --- -t, and the headers added ----------------------------------------------------------------


def test_t_takes_to_cc_and_bcc_and_never_sends_bcc(site: Site) -> None:
    message = (
        b"To: Alice <alice@example.org>, bob@example.org\n"
        b"Cc: undisclosed-recipients:;\n"
        b"Bcc: hidden@example.org,\n"
        b' "Also Hidden" <hidden2@example.net>\n'
        b"Subject: plans\n"
        b"Cc: carol@example.com\n"
        b"\n"
        b"Bcc: this line is body, and stays\n"
    )
    done = subcommand(site.config, "-t", "dave@example.org", stdin=message)
    assert done.exit_code == 0, done.output
    envelope, stored = site.one()
    assert envelope.recipients == (
        "dave@example.org",
        "alice@example.org",
        "bob@example.org",
        "carol@example.com",
        "hidden@example.org",
        "hidden2@example.net",
    )
    assert b"idden" not in stored.split(b"\r\n\r\n", 1)[0]
    assert "bcc" not in headers(stored)
    assert body(stored) == b"Bcc: this line is body, and stays\r\n"


def test_bcc_is_removed_without_t_too(site: Site) -> None:
    done = subcommand(site.config, "alice@example.org", stdin=b"Bcc: alice@example.org\n\nhi\n")
    assert done.exit_code == 0
    assert "bcc" not in headers(site.one()[1])


def test_from_date_and_message_id_are_added_when_missing(site: Site) -> None:
    done = subcommand(site.config, "-F", "Jörg Müller", "alice@example.org", stdin=b"hello\n")
    assert done.exit_code == 0, done.output
    _, message = site.one()
    found = headers(message)
    # No header at all: the first line is body, after the added fields and a blank line.
    assert list(found) == ["from", "date", "message-id"]
    [sender] = policy.default.header_factory("From", found["from"][0]).addresses
    assert (sender.display_name, sender.addr_spec) == ("Jörg Müller", f"root@{HOSTNAME}")
    assert found["from"][0].isascii()  # RFC 2047 words: no SMTPUTF8 needed
    assert parsedate_to_datetime(found["date"][0]).tzinfo is not None
    assert found["message-id"][0].startswith("<") and found["message-id"][0].endswith(
        f"@{HOSTNAME}>"
    )
    assert body(message) == b"hello\r\n"


def test_the_sender_domain_comes_from_local_sender_domain(tmp_path: Path) -> None:
    site = Site(tmp_path)
    with site.config.open("a") as fh:
        fh.write('\n[submission]\nlocal_sender_domain = "example.org"\n')
    assert subcommand(site.config, "alice@example.org", stdin=b"hi\n").exit_code == 0
    assert headers(site.one()[1])["from"] == ["root <root@example.org>"]


@pytest.mark.parametrize(
    ("ignore", "stored"),
    [((), b"a\r\n"), (("-i",), b"a\r\n.\r\nb\r\n"), (("-oi",), b"a\r\n.\r\nb\r\n")],
)
def test_a_lone_dot_ends_the_message_unless_i(
    site: Site, ignore: tuple[str, ...], stored: bytes
) -> None:
    done = subcommand(site.config, *ignore, "alice@example.org", stdin=b"Subject: x\n\na\n.\nb\n")
    assert done.exit_code == 0
    assert body(site.one()[1]) == stored


def test_line_ends_become_crlf_and_a_lone_cr_stays(site: Site) -> None:
    done = subcommand(site.config, "alice@example.org", stdin=b"Subject: x\r\n\nbare\ncr\rhere\r\n")
    assert done.exit_code == 0
    assert body(site.one()[1]) == b"bare\r\ncr\rhere\r\n"


# --- exit status ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "stdin", "error"),
    [
        ((), b"hi\n", "no recipients: name them as arguments, or use -t"),
        (("-t",), b"Subject: x\n\nhi\n", "no recipients: none on the command line"),
        (("-t",), b"To: undisclosed-recipients:;\n\nhi\n", "no recipients: none on"),
        (("-x", "alice@example.org"), b"", "unknown option -x (usage: "),
        (("--verbose", "alice@example.org"), b"", "unknown option --verbose"),
        (("-bs",), b"", "-bs is not supported"),
        (("-bp",), b"", "-bp is not supported"),
        (("-q",), b"", "unknown option -q"),
        (("alice@example.org", "-f"), b"", "option -f needs a value"),
        (("alice\n@example.org",), b"", "bad recipient 'alice\\n@example.org'"),
        (("a@example.org c@example.org",), b"", "bad recipient"),
        (("-F", "Evil\nBcc: x@example.net", "a@example.org"), b"", "-F: the name holds"),
        (
            ("-N", "sucess", "a@example.org"),
            b"hi\n",
            "-N 'sucess': notify must be never, or a comma-separated list of success, "
            "failure and delay (usage: smtpkit-sendmail [-t]",
        ),
        (("-N", "never,delay", "a@example.org"), b"hi\n", "-N 'never,delay': notify must"),
        (("-N", ",", "a@example.org"), b"hi\n", "-N ',': notify must be never"),
        (("-R", "headers", "a@example.org"), b"hi\n", "-R 'headers': the return type must"),
        (("-V", "", "a@example.org"), b"hi\n", "-V: the envelope ID is empty"),
        (("-V", "id\r\nX: y", "a@example.org"), b"hi\n", "-V: the envelope ID must be printable"),
        (("-V", "caf\u00e9", "a@example.org"), b"hi\n", "-V: the envelope ID must be printable"),
        # RFC 3461 4.4's 100 characters, counted as the xtext a next hop gets ("+" is "+2B").
        (("-V", "+" * 34, "a@example.org"), b"hi\n", "-V: the envelope ID is longer than 100"),
        (("a@example.org", "-N"), b"hi\n", "option -N needs a value"),
    ],
)
def test_usage_errors_exit_64(site: Site, args: tuple[str, ...], stdin: bytes, error: str) -> None:
    done = script(site.config, *args, stdin=stdin)
    assert done.returncode == 64
    line = done.stderr.decode()
    assert line.startswith("smtpkit-sendmail: ") and error in line
    assert line.count("\n") == 1
    assert site.nothing_left()


def test_too_big_exits_65_and_leaves_nothing(tmp_path: Path) -> None:
    site = Site(tmp_path, limits="max_message_size = 1000")
    done = script(site.config, "alice@example.org", stdin=b"Subject: big\n\n" + b"x" * 2000)
    assert done.returncode == 65
    assert done.stderr.decode() == (
        "smtpkit-sendmail: message too big: over the limit of 1000 bytes "
        f"(limits.max_message_size in {site.config})\n"
    )
    assert site.nothing_left()
    # The limit counts the headers too, however long, and with -t.
    long_head = b"To: alice@example.org\nX-Long: " + b"y" * 2000 + b"\n\nhi\n"
    assert script(site.config, "-t", stdin=long_head).returncode == 65
    assert site.nothing_left()


def test_headers_that_do_not_parse_with_t_exit_65(site: Site) -> None:
    done = subcommand(site.config, "-t", stdin=b"To: alice@example.org bob@example.org\n\nhi\n")
    assert done.exit_code == 65
    assert done.output.startswith("smtpkit sendmail: cannot parse the To: header: ")
    assert site.nothing_left()


def test_a_missing_maildrop_exits_73_and_says_what_creates_it(tmp_path: Path) -> None:
    site = Site(tmp_path, make_maildrop=False)
    done = script(site.config, "alice@example.org", stdin=b"hi\n")
    assert done.returncode == 73
    assert done.stderr.decode() == (
        f"smtpkit-sendmail: cannot write the maildrop {site.maildrop}: No such file or "
        "directory (`smtpkit serve` and `smtpkit init` create it, with mode 1733, in a data "
        "folder every user may pass through)\n"
    )


def test_a_full_disk_exits_75(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(maildrop, "write_all", full)
    done = subcommand(site.config, "alice@example.org", stdin=b"hi\n")
    assert done.exit_code == 75
    assert done.output == (
        f"smtpkit sendmail: cannot write the maildrop {site.maildrop}: No space left on "
        "device; try again later\n"
    )
    assert site.nothing_left()


def test_no_config_or_a_bad_one_exits_78(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    done = script(missing, "alice@example.org", stdin=b"hi\n")
    assert done.returncode == 78
    assert done.stderr.decode().startswith("smtpkit-sendmail: config file not found")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    done = script(bad, "alice@example.org", stdin=b"hi\n")
    assert done.returncode == 78
    assert "not valid TOML" in done.stderr.decode()


def test_without_smtpkit_config_the_script_reads_etc(tmp_path: Path) -> None:
    done = script(None, "--help")
    assert done.returncode == 0
    assert b"[default: $SMTPKIT_CONFIG, else /etc/smtpkit/smtpkit.toml]" in done.stdout
    if not Path("/etc/smtpkit/smtpkit.toml").exists():
        done = script(None, "alice@example.org", stdin=b"hi\n")
        assert done.returncode == 78
        assert b"(/etc/smtpkit/smtpkit.toml)" in done.stderr


def test_help_of_the_subcommand(site: Site) -> None:
    done = subcommand(site.config, "--help")
    assert done.exit_code == 0
    assert done.output.startswith("usage: smtpkit sendmail [-t] [-i] [-f SENDER]")
    assert "[default: -c, $SMTPKIT_CONFIG, else ./smtpkit.toml]" in done.output


def test_c_names_the_config_after_the_subcommand(tmp_path: Path) -> None:
    site = Site(tmp_path)
    done = subcommand(
        tmp_path / "not-this.toml", "-C", str(site.config), "alice@example.org", stdin=b"hi\n"
    )
    assert done.exit_code == 0, done.output
    assert len(site.dropped()) == 1


# --- the parser -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-ti"], Invocation(extract_recipients=True, ignore_dots=True)),
        (["-oi", "-oem", "-odb", "-o7", "a@x"], Invocation(recipients=("a@x",), ignore_dots=True)),
        (["-o", "i", "a@x"], Invocation(recipients=("a@x",), ignore_dots=True)),
        (["-B", "8BITMIME", "-B7BIT", "-bm", "a@x"], Invocation(recipients=("a@x",))),
        (["-v", "-U", "-n", "-m", "-G", "-em", "a@x"], Invocation(recipients=("a@x",))),
        (["-L", "label", "-h", "3", "-O", "x=y", "a@x"], Invocation(recipients=("a@x",))),
        (
            ["-N", "never", "-R", "hdrs", "-V", "envid", "a@x"],
            Invocation(recipients=("a@x",), notify=frozenset({"NEVER"}), ret="HDRS", envid="envid"),
        ),
        (
            ["-NSuccess,DELAY", "-Rfull", "-Vq+r=s t", "a@x"],
            Invocation(
                recipients=("a@x",),
                notify=frozenset({"SUCCESS", "DELAY"}),
                ret="FULL",
                envid="q+r=s t",
            ),
        ),
        # Postfix's separators: commas or white space.
        (
            ["-N", "failure, delay", "a@x"],
            Invocation(recipients=("a@x",), notify=frozenset({"FAILURE", "DELAY"})),
        ),
        # The last one counts, as with every sendmail option.
        (
            ["-N", "success", "a@x", "-N", "never"],
            Invocation(recipients=("a@x",), notify=frozenset({"NEVER"})),
        ),
        (
            ["-ti", "-Nnever"],
            Invocation(extract_recipients=True, ignore_dots=True, notify=frozenset({"NEVER"})),
        ),  # fmt: skip
        (["-V", "x" * 100, "a@x"], Invocation(recipients=("a@x",), envid="x" * 100)),
        (["-r", "x@y", "a@x"], Invocation(recipients=("a@x",), sender="x@y")),
        (["-tfx@y", "a@x"], Invocation(recipients=("a@x",), sender="x@y", extract_recipients=True)),
        (["-F", "", "a@x"], Invocation(recipients=("a@x",), full_name="")),
        (["--", "-t", "a@x"], Invocation(recipients=("-t", "a@x"))),
        (["a@x", "a@x", "Bob <b@x>, c@x"], Invocation(recipients=("a@x", "b@x", "c@x"))),
        (["root"], Invocation(recipients=("root",))),
        (
            ["-C", "/etc/other.toml", "a@x"],
            Invocation(recipients=("a@x",), config=Path("/etc/other.toml")),
        ),
        (["-c/x.toml", "a@x"], Invocation(recipients=("a@x",), config=Path("/x.toml"))),
        (["--config=/x.toml", "a@x"], Invocation(recipients=("a@x",), config=Path("/x.toml"))),
        (["--help"], Invocation(help=True)),
    ],
)
def test_parser(argv: list[str], expected: Invocation) -> None:
    assert parse_arguments(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["-z"], ["-bi"], ["-t", "-X", "/tmp/log"], ["-F"], ["--bogus"], ["a@x", "<<<"],
        ["-N"], ["-N", ""], ["-N", "always", "a@x"], ["-N", "never,success", "a@x"],
        ["-R", "body", "a@x"], ["-V", "", "a@x"], ["-V", "x" * 101, "a@x"],
    ],
)  # fmt: skip
def test_parser_refuses(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_arguments(argv)


# --- an ordinary user (root, as in CI) ---------------------------------------------------------


def test_an_ordinary_users_drop_is_safe_from_other_users(
    open_tmp_path: Path, system_venv: Path
) -> None:
    if os.geteuid() != 0:
        unavailable("running as other users needs root (CI runs as root)")
    site = Site(open_tmp_path, make_maildrop=False)
    for folder, _, files in os.walk(site.directory):
        for name in [".", *files]:
            os.chown(os.path.join(folder, name), SERVICE, SERVICE)
    python = str(system_venv / "bin" / "python")
    message = b"Subject: from a script\n\nhello\n"

    # The data folder (0750) does not let nobody reach a maildrop yet.
    done = script(site.config, "alice@example.org", stdin=message, user="nobody", python=python)
    assert done.returncode == 73, done.stderr
    assert b"Permission denied" in done.stderr

    ensure_maildrop(site.directory)
    done = script(
        site.config, "-i", "--", "alice@example.org", stdin=message, user="nobody", python=python
    )
    assert (done.returncode, done.stderr) == (0, b"")
    [path] = pending(site.maildrop)
    info = path.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (65534, 0o644)
    assert stat.S_IMODE(site.maildrop.stat().st_mode) == 0o1733
    with read(path, max_size=10**6) as dropped:
        assert dropped.uid == 65534
        stored = b"".join(dropped.chunks())
    assert headers(stored)["from"] == [f"nobody <nobody@{HOSTNAME}>"]

    # Another ordinary user can neither list the maildrop, nor read, remove or rename it.
    probe = (
        "import os, sys\n"
        "folder, path = sys.argv[1], sys.argv[2]\n"
        "for name, act in [('list', lambda: os.listdir(folder)),\n"
        "                  ('unlink', lambda: os.unlink(path)),\n"
        "                  ('rename', lambda: os.rename(path, path + '.mine')),\n"
        "                  ('write', lambda: os.open(path, os.O_WRONLY))]:\n"
        "    try:\n"
        "        act()\n"
        "        print(name, 'allowed')\n"
        "    except OSError as exc:\n"
        "        print(name, exc.errno)\n"
    )
    checked = subprocess.run(
        ["/usr/bin/python3", "-c", probe, str(site.maildrop), str(path)],
        capture_output=True,
        text=True,
        user=STRANGER,
        group=STRANGER,
        extra_groups=[],
        cwd="/",
        timeout=60,
        check=True,
    )
    assert checked.stdout.split("\n") == [
        f"list {errno.EACCES}",
        f"unlink {errno.EPERM}",
        f"rename {errno.EPERM}",
        f"write {errno.EACCES}",
        "",
    ]
    assert pending(site.maildrop) == [path]
    assert stat.S_IMODE(site.maildrop.stat().st_mode) == 0o1733
