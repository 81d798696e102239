"""smtpkit.check: every check finding its problem, and quiet on a healthy data folder.

The data folders belong to ``nobody``, the identity the server would run as; ownership
problems are real files owned by root or by a uid with no user (shown as its number). Run as
root, as CI does: the checks are made as ``nobody``, not as root.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from smtpkit.check import Problem, check_config, count_mailboxes
from smtpkit.config import load_config
from smtpkit.errors import ConfigError
from smtpkit.owner import Owner, as_owner
from tests.conftest import unavailable

NOBODY = pwd.getpwnam("nobody")
STRANGER = 54321  # a uid no user has: shown as its number
RUNS_AS = "smtpkit runs as nobody"
SERVE_AS_ROOT = (
    "(serve started as root loads it with root's rights, at start-up and on SIGHUP; "
    "started as nobody, it cannot)"
)


def chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid, follow_symlinks=False)
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def snapshot(top: Path) -> dict[str, tuple[Any, ...]]:
    """Everything about a tree that a write could change (access times aside)."""
    seen: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(top):
        for name in ["", *dirs, *files]:
            path = os.path.join(folder, name) if name else folder
            st = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            seen[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, link)
    return seen


class Site:
    """A data folder with its config, healthy until a test breaks it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config_path = directory / "smtpkit.toml"
        self.settings: dict[str, Any] = {
            "server": {
                "hostname": "mx.example.org",
                "listen": ["0.0.0.0:25"],
                "directory": ".",
                "domains": ["example.org", "example.net"],
            },
            "aliases": {
                "postmaster@example.org": "alice@example.org",
                "postmaster@example.net": "alice@example.org",
            },
        }
        directory.mkdir(mode=0o750)
        os.chmod(directory, 0o750)
        os.chown(directory, NOBODY.pw_uid, NOBODY.pw_gid)
        self.folder("users", 0o700)
        self.folder("journal", 0o750)
        for address in ("alice@example.org", "bob@example.org"):
            self.mailbox(address)
        self.write()

    def folder(self, rel: str, mode: int = 0o700) -> Path:
        path = self.directory / rel
        path.mkdir(mode=mode)
        os.chmod(path, mode)  # whatever the umask
        os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
        return path

    def file(self, rel: str, data: bytes = b"x", mode: int = 0o600, uid: int = -1) -> Path:
        """A file, owned by ``uid`` (default: the data folder's owner)."""
        path = self.directory / rel
        path.write_bytes(data)
        os.chmod(path, mode)
        owner = self.directory.stat()
        if uid == -1:
            os.chown(path, owner.st_uid, owner.st_gid)
        else:
            os.chown(path, uid, uid)
        return path

    def mailbox(self, address: str) -> Path:
        path = self.folder(f"users/{address}")
        for sub in ("tmp", "new", "cur"):
            self.folder(f"users/{address}/{sub}")
        return path

    def write(self) -> None:
        self.file("smtpkit.toml", tomli_w.dumps(self.settings).encode(), mode=0o640)

    def check(self, runs_as: Owner | None = None) -> list[Problem]:
        self.write()
        return check_config(load_config(self.config_path), runs_as=runs_as)


@pytest.fixture
def site(open_tmp_path: Path) -> Site:
    if os.geteuid() != 0:
        unavailable("checking as the data folder's owner needs root (CI runs as root)")
    return Site(open_tmp_path / "mail")


def error(text: str) -> Problem:
    return Problem(False, text)


def fatal(text: str) -> Problem:
    return Problem(True, text)


# --- a healthy folder, and read-only ----------------------------------------------------------


def test_a_healthy_folder_has_no_problem(site: Site) -> None:
    assert site.check() == []
    assert count_mailboxes(load_config(site.config_path)) == 2


def test_a_healthy_folder_with_mail_spool_and_journal_has_no_problem(site: Site) -> None:
    site.file("users/alice@example.org/new/1.M1P1Q1.host", b"Subject: hi\r\n\r\nhi\r\n")
    site.file("users/alice@example.org/cur/2.M1P1Q1.host:2,S", b"Subject: hi\r\n\r\nhi\r\n")
    site.folder("users/.spool")
    site.folder("users/.spool/0")
    site.file("users/.spool/0/3.M1P1Q1.host")
    site.file("journal/2026_11_30_05", b"{}\n", mode=0o640)
    site.folder("users/alice@example.org/.Sent")  # a Maildir++ folder, as Dovecot makes them
    assert site.check() == []


def test_check_changes_nothing_not_even_a_missing_journal(site: Site) -> None:
    (site.directory / "journal").rmdir()
    site.file("users/alice@example.org/tmp/leftover", mode=0o644, uid=0)
    site.write()
    before = snapshot(site.directory)
    problems = check_config(load_config(site.config_path))
    assert problems == [
        error(
            "users/alice@example.org/tmp/leftover: owned by root, not by nobody; readable by "
            "others (mode 0644)"
        )
    ]
    assert snapshot(site.directory) == before
    assert not (site.directory / "journal").exists()


def test_the_identity_is_back_after_the_check(site: Site) -> None:
    site.check()
    assert (os.geteuid(), os.getegid()) == (0, 0)


# --- the data folder and its owner --------------------------------------------------------------


def test_a_missing_data_folder(site: Site, open_tmp_path: Path) -> None:
    site.settings["server"]["directory"] = str(open_tmp_path / "nowhere")
    assert site.check() == [
        fatal(f"server -> directory: {open_tmp_path / 'nowhere'}: no such folder")
    ]


def test_a_data_folder_that_is_a_file(site: Site, open_tmp_path: Path) -> None:
    (open_tmp_path / "file").write_text("")
    site.settings["server"]["directory"] = str(open_tmp_path / "file")
    assert site.check() == [fatal(f"server -> directory: {open_tmp_path / 'file'}: not a folder")]


def test_a_data_folder_owned_by_root_runs_the_server_as_root(site: Site) -> None:
    chown_tree(site.directory, 0, 0)
    assert site.check() == [
        error(
            f"{site.directory}: owned by root, so smtpkit serve runs as root: production "
            "should give the data folder a user of its own (smtpkit init --owner USER for a "
            f"new one; for this one: useradd --system smtpkit; chown -R smtpkit: "
            f"{site.directory})"
        )
    ]


def test_a_server_running_as_another_user_is_judged_by_the_mode_bits(site: Site) -> None:
    other = Owner(STRANGER, STRANGER, str(STRANGER))
    assert site.check(runs_as=other) == [
        error(
            f"{site.directory}: owned by nobody, but smtpkit runs as {STRANGER}: what it "
            "creates would not belong to nobody"
        ),
        fatal(
            f"cannot write {site.directory}: owned by nobody, mode 0750; smtpkit runs as {STRANGER}"
        ),
    ]


def test_a_folder_above_the_data_folder_that_the_owner_cannot_pass(open_tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("checking as the data folder's owner needs root (CI runs as root)")
    closed = open_tmp_path / "closed"
    closed.mkdir(mode=0o700)
    site = Site(closed / "mail")
    # Root passes anywhere; the owner does not, and nothing below is judged for it.
    assert site.check() == [
        fatal(f"cannot read {site.directory}: {closed} is owned by root, mode 0700; {RUNS_AS}")
    ]


def test_a_data_folder_the_owner_cannot_read(site: Site) -> None:
    os.chmod(site.directory, 0o300)
    assert site.check() == [
        fatal(f"cannot read {site.directory}: owned by nobody, mode 0300; {RUNS_AS}")
    ]


def test_the_data_folder_must_be_writable(site: Site) -> None:
    """serve writes its pid file there at every start (and makes journal/, queue/ and
    maildrop/ there when they are missing), so even a complete folder must be writable."""
    site.folder("queue")
    site.folder("maildrop", 0o1733)
    os.chmod(site.directory, 0o550)
    assert site.check() == [
        fatal(f"cannot write {site.directory}: owned by nobody, mode 0550; {RUNS_AS}")
    ]


def test_a_checker_who_cannot_look_says_so(site: Site, open_tmp_path: Path) -> None:
    chown_tree(site.directory, STRANGER, STRANGER)
    config = load_config(site.config_path)
    checker = open_tmp_path / "checker"
    checker.mkdir()
    os.chown(checker, NOBODY.pw_uid, NOBODY.pw_gid)
    with as_owner(checker):  # nobody checks a folder of another user's
        problems = check_config(config)
    assert problems == [
        error(
            f"cannot check {site.directory}: Permission denied for nobody (run smtpkit check "
            f"as root or as {STRANGER})"
        )
    ]


# --- owner and modes of everything inside -------------------------------------------------------


def test_a_folder_root_made_in_a_maildir_cannot_be_written(site: Site) -> None:
    os.chown(site.directory / "users/alice@example.org/new", 0, 0)
    assert site.check() == [
        fatal(f"cannot write users/alice@example.org/new: owned by root, mode 0700; {RUNS_AS}")
    ]


def test_a_mailbox_the_owner_cannot_enter_hides_its_folders(site: Site) -> None:
    os.chown(site.directory / "users/bob@example.org", 0, 0)
    os.chown(site.directory / "users/bob@example.org/new", 0, 0)
    # new/ is root's too, but only the first folder the server cannot pass is named.
    assert site.check() == [
        fatal(f"cannot read users/bob@example.org: owned by root, mode 0700; {RUNS_AS}"),
        error("users/bob@example.org/new: owned by root, not by nobody (mode 0700)"),
    ]


def test_users_the_owner_cannot_write(site: Site) -> None:
    os.chmod(site.directory / "users", 0o500)
    assert site.check() == [fatal(f"cannot write users: owned by nobody, mode 0500; {RUNS_AS}")]


def test_users_the_owner_cannot_pass_is_one_problem(site: Site) -> None:
    os.chmod(site.directory / "users", 0o600)
    assert site.check() == [fatal(f"cannot write users: owned by nobody, mode 0600; {RUNS_AS}")]


def test_a_message_root_copied_belongs_to_root(site: Site) -> None:
    site.file("users/alice@example.org/new/1.M1.host", mode=0o644, uid=0)
    assert site.check() == [
        error(
            "users/alice@example.org/new/1.M1.host: owned by root, not by nobody; readable by "
            "others (mode 0644)"
        )
    ]


def test_many_files_with_the_same_problem_are_one_line(site: Site) -> None:
    for n in range(5):
        site.file(f"users/alice@example.org/cur/{n}.M1.host", uid=0)
    site.file("users/alice@example.org/cur/9.M1.host", uid=STRANGER)
    assert site.check() == [
        error(
            "users/alice@example.org/cur: 5 files owned by root, not by nobody: 0.M1.host, "
            "1.M1.host, 2.M1.host and 2 more"
        ),
        error(
            f"users/alice@example.org/cur/9.M1.host: owned by {STRANGER}, not by nobody (mode 0600)"
        ),
    ]


def test_folders_and_files_writable_by_group_or_others(site: Site) -> None:
    os.chmod(site.directory / "journal", 0o770)
    os.chmod(site.directory / "users/bob@example.org/cur", 0o777)
    site.file("journal/2026_11_30_05", mode=0o662)
    assert site.check() == [
        error("journal: writable by group (mode 0770)"),
        error("journal/2026_11_30_05: writable by group and others (mode 0662)"),
        error(
            "users/bob@example.org/cur: writable by group and others; readable by others "
            "(mode 0777)"
        ),
    ]


def test_users_and_mailboxes_readable_by_others(site: Site) -> None:
    os.chmod(site.directory / "users", 0o755)
    os.chmod(site.directory / "users/alice@example.org", 0o744)
    os.chmod(site.directory / "journal", 0o755)  # the journal may be: it names no content
    assert site.check() == [
        error("users: readable by others (mode 0755)"),
        error("users/alice@example.org: readable by others (mode 0744)"),
    ]


def test_dovecots_empty_uidvalidity_marker_may_be_readable(site: Site) -> None:
    """Dovecot makes it 0444 whatever the umask; it is empty. A non-empty file of that
    name, or another name, is still reported."""
    box = site.directory / "users/alice@example.org"
    marker = box / "dovecot-uidvalidity.6b0d19a2"
    marker.write_text("")
    marker.chmod(0o444)
    os.chown(marker, NOBODY.pw_uid, NOBODY.pw_gid)
    assert site.check() == []
    marker.write_text("x")
    assert site.check() == [
        error(
            "users/alice@example.org/dovecot-uidvalidity.6b0d19a2: readable by others (mode 0444)"
        )
    ]


def test_a_root_owned_config_in_the_data_folder_is_fine_other_files_not(site: Site) -> None:
    site.check()
    os.chown(site.config_path, 0, 0)
    os.link(site.config_path, site.directory / "smtpkit.toml.bak")
    (site.directory / "notes.txt").write_text("")
    os.chmod(site.directory / "notes.txt", 0o600)
    config = load_config(site.config_path)  # written as nobody's by check(): keep root's
    assert check_config(config) == [error("notes.txt: owned by root, not by nobody (mode 0600)")]


def test_lost_and_found_is_left_alone(site: Site) -> None:
    (site.directory / "users/lost+found").mkdir(mode=0o700)
    (site.directory / "lost+found").mkdir(mode=0o700)
    assert site.check() == []


# --- Maildirs and the spool pool ----------------------------------------------------------------


def test_a_maildir_without_its_folders(site: Site) -> None:
    (site.directory / "users/alice@example.org/tmp").rmdir()
    (site.directory / "users/bob@example.org/new").rmdir()
    site.file("users/bob@example.org/new")
    assert site.check() == [
        fatal("users/alice@example.org/tmp: no such folder (a Maildir needs tmp/, new/ and cur/)"),
        fatal("users/bob@example.org/new: not a folder, where serve needs one"),
    ]


def test_links_in_a_maildir(site: Site, open_tmp_path: Path) -> None:
    elsewhere = open_tmp_path / "elsewhere"
    elsewhere.mkdir()
    cur = site.directory / "users/alice@example.org/cur"
    cur.rmdir()
    cur.symlink_to(elsewhere)
    (site.directory / "users/bob@example.org/new/1.M1.host").symlink_to("/etc/passwd")
    links = "serve refuses to deliver through links under users/ (451 4.3.0)"
    assert site.check() == [
        fatal(
            f"users/alice@example.org/cur: a symbolic link (to {elsewhere}): {links}; make it a "
            "real folder or file"
        ),
        error(
            "users/bob@example.org/new/1.M1.host: a symbolic link (to /etc/passwd): "
            f"{links}; make it a real folder or file"
        ),
    ]


def test_a_mailbox_that_is_a_link(site: Site) -> None:
    bob = site.directory / "users/bob@example.org"
    bob.rename(site.directory / "bob")
    bob.symlink_to(site.directory / "bob")
    os.chown(bob, NOBODY.pw_uid, NOBODY.pw_gid, follow_symlinks=False)
    assert site.check() == [
        fatal(
            f"users/bob@example.org: a symbolic link (to {site.directory / 'bob'}): serve refuses "
            "to deliver through links under users/ (451 4.3.0); make it a real folder or file"
        )
    ]


def test_folders_in_users_no_address_reaches(site: Site) -> None:
    site.mailbox("Carol@example.org")
    site.mailbox("dave@elsewhere.example")
    site.file("users/notes")
    # An international mailbox under its canonical name is reached (smtpkit user add makes
    # it so); its NFD spelling, or a U-label domain, is a folder no address reaches.
    site.mailbox("müller@example.org")
    site.mailbox("mu\u0308ller@example.org")
    site.mailbox("jörg@bücher.example")
    reach = (
        "mailboxes are named by lower-case addresses in server.domains (example.org, example.net)"
    )
    assert site.check() == [
        error(f"users/Carol@example.org: no address reaches this folder: {reach}"),
        error(f"users/dave@elsewhere.example: no address reaches this folder: {reach}"),
        error(f"users/jörg@bücher.example: no address reaches this folder: {reach}"),
        error(f"users/mu\u0308ller@example.org: no address reaches this folder: {reach}"),
        error("users/notes: not a folder, so no mailbox (a mailbox is a Maildir)"),
    ]


def test_the_spool_pool_must_be_writable_and_no_link(site: Site, open_tmp_path: Path) -> None:
    spool = site.folder("users/.spool")
    os.chown(spool, 0, 0)
    assert site.check() == [
        fatal(f"cannot write users/.spool: owned by root, mode 0700; {RUNS_AS}")
    ]
    os.chown(spool, NOBODY.pw_uid, NOBODY.pw_gid)
    (spool / "0").symlink_to(open_tmp_path)
    (spool / "1.M1.host").symlink_to("/etc/passwd")  # a planted file: serve removes it
    links = "serve refuses to deliver through links under users/ (451 4.3.0); make it a real"
    assert site.check() == [
        fatal(f"users/.spool/0: a symbolic link (to {open_tmp_path}): {links} folder or file"),
        error(f"users/.spool/1.M1.host: a symbolic link (to /etc/passwd): {links} folder or file"),
    ]


def test_the_journal_must_be_a_writable_folder(site: Site) -> None:
    os.chmod(site.directory / "journal", 0o550)
    assert site.check() == [fatal(f"cannot write journal: owned by nobody, mode 0550; {RUNS_AS}")]
    (site.directory / "journal").rmdir()
    site.file("journal")
    assert site.check() == [fatal("journal: not a folder, where serve needs one")]


def test_the_queue_must_be_a_writable_folder(site: Site) -> None:
    """Mail for other domains (and reports owed to local senders) is written there: serve
    cannot start without it."""
    queue = site.folder("queue")
    site.file("queue/.lock")
    assert site.check() == []
    os.chown(queue, 0, 0)  # a root `mkdir` or `cp -r`: the owner cannot even list it
    assert site.check() == [fatal(f"cannot write queue: owned by root, mode 0700; {RUNS_AS}")]
    os.chown(queue, NOBODY.pw_uid, NOBODY.pw_gid)
    os.chmod(queue, 0o500)
    assert site.check() == [fatal(f"cannot write queue: owned by nobody, mode 0500; {RUNS_AS}")]
    queue.chmod(0o700)
    (queue / ".lock").unlink()
    queue.rmdir()
    site.file("queue")
    assert site.check() == [fatal("queue: not a folder, where serve needs one")]


def test_a_pid_file_root_left_stops_serve(site: Site) -> None:
    """serve locks the pid file and replaces it as the owner: one of root's stops it."""
    pid = site.file("smtpkit.pid", b"4242\n", mode=0o644)
    assert site.check() == []
    os.chown(pid, 0, 0)
    assert site.check() == [
        fatal(
            f"cannot write smtpkit.pid: owned by root, mode 0644; {RUNS_AS} (once no server "
            "runs for this folder, remove it)"
        )
    ]
    pid.unlink()
    site.folder("smtpkit.pid")
    assert site.check() == [
        fatal("smtpkit.pid: not a regular file, where serve writes its pid (remove it)")
    ]


def test_a_maildrop_of_another_user_stops_serve_a_wrong_mode_does_not(site: Site) -> None:
    maildrop = site.folder("maildrop", 0o1733)
    assert site.check() == []
    maildrop.chmod(0o755)
    assert site.check() == [
        error("maildrop: mode 0755; it must be mode 1733 (smtpkit serve sets it right)")
    ]
    # serve, as the owner, neither opens nor takes over a folder of root's.
    os.chown(maildrop, 0, 0)
    maildrop.chmod(0o1733)
    group = grp.getgrgid(NOBODY.pw_gid).gr_name
    assert site.check() == [
        fatal(
            f"maildrop: owned by root, not by nobody, so smtpkit serve cannot take it over "
            f"(chown nobody:{group} {maildrop}; serve then sets its mode, 1733)"
        )
    ]
    os.chown(maildrop, NOBODY.pw_uid, NOBODY.pw_gid)
    maildrop.chmod(0o333)
    assert site.check() == [fatal(f"cannot read maildrop: owned by nobody, mode 0333; {RUNS_AS}")]


def test_no_users_folder_and_no_mailbox(site: Site) -> None:
    for address in ("alice@example.org", "bob@example.org"):
        for sub in ("tmp", "new", "cur"):
            (site.directory / "users" / address / sub).rmdir()
        (site.directory / "users" / address).rmdir()
    postmaster = "alice@example.org has no mailbox (smtpkit user add alice@example.org)"
    assert site.check() == [
        error("users: no mailbox yet (smtpkit user add ADDRESS)"),
        error(f"aliases -> postmaster@example.org: {postmaster}"),
        error(f"aliases -> postmaster@example.net: {postmaster}"),
    ]
    (site.directory / "users").rmdir()
    assert site.check() == [
        fatal("users: no such folder, so no mailbox (smtpkit user add creates it)")
    ]


# --- aliases and postmaster ---------------------------------------------------------------------


def test_alias_targets_without_a_mailbox(site: Site) -> None:
    site.settings["aliases"] |= {
        "sales@example.org": "carol@example.org",
        "team@example.org": ["alice@example.org", "dave@example.org", "erin@example.org"],
    }
    assert site.check() == [
        error(
            "aliases -> sales@example.org: carol@example.org has no mailbox (smtpkit user add "
            "carol@example.org)"
        ),
        error(
            "aliases -> team@example.org: dave@example.org, erin@example.org have no mailbox "
            "(smtpkit user add dave@example.org erin@example.org)"
        ),
    ]


def test_an_alias_to_an_alias(site: Site) -> None:
    site.settings["aliases"] |= {
        "sales@example.org": "alice@example.org",
        "info@example.org": "sales@example.org",
    }
    assert site.check() == [
        error(
            "aliases -> info@example.org: sales@example.org is an alias, not a mailbox, and "
            "aliases do not lead to aliases (name the mailboxes of sales@example.org here)"
        )
    ]


def test_an_alias_hiding_a_mailbox(site: Site) -> None:
    site.settings["aliases"] |= {"bob@example.org": "alice@example.org"}
    assert site.check() == [
        error(
            "aliases -> bob@example.org: hides the mailbox users/bob@example.org, which "
            "receives nothing: the alias wins (add bob@example.org to the alias's addresses "
            "to keep both)"
        )
    ]
    # Delivering to the mailbox too, and elsewhere, is what such an alias is for.
    site.settings["aliases"]["bob@example.org"] = ["bob@example.org", "alice@example.org"]
    assert site.check() == []


def test_every_domain_needs_a_postmaster(site: Site) -> None:
    del site.settings["aliases"]["postmaster@example.net"]
    assert site.check() == [
        error(
            "aliases: postmaster@example.net reaches no mailbox, and every domain must have "
            'one (RFC 5321 4.5.1): add "postmaster@example.net" = "alice@example.org" to '
            "[aliases]"
        )
    ]
    site.mailbox("postmaster@example.net")  # a mailbox of its own does as well
    assert site.check() == []


def test_a_postmaster_alias_is_never_advised_to_an_international_mailbox(site: Site) -> None:
    # [aliases] take ASCII addresses only: the advice names the first ASCII mailbox.
    del site.settings["aliases"]["postmaster@example.net"]
    site.mailbox("ärger@example.net")
    assert site.check() == [
        error(
            "aliases: postmaster@example.net reaches no mailbox, and every domain must have "
            'one (RFC 5321 4.5.1): add "postmaster@example.net" = "alice@example.org" to '
            "[aliases]"
        )
    ]


# --- TLS ----------------------------------------------------------------------------------------


def make_certificate(
    names: list[x509.GeneralName] | None,
    *,
    start: datetime | None = None,
    days: float = 90,
    key: Any = None,
) -> tuple[bytes, bytes]:
    """A self-signed certificate (PEM) for ``names`` and its key (PEM)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = start or datetime.now(UTC) - timedelta(hours=1)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


MX = [x509.DNSName("mx.example.org")]


def with_tls(site: Site, cert: bytes, key: bytes) -> tuple[Path, Path]:
    if not (site.directory / "tls").exists():
        site.folder("tls")
    site.settings["tls"] = {"certificate": "tls/cert.pem", "key": "tls/key.pem"}
    return site.file("tls/cert.pem", cert, mode=0o644), site.file("tls/key.pem", key)


def not_after(path: Path) -> datetime:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def test_a_good_certificate_has_no_problem(site: Site) -> None:
    with_tls(site, *make_certificate(MX))
    assert site.check() == []


def test_a_wildcard_certificate_covers_the_host_name(site: Site) -> None:
    with_tls(site, *make_certificate([x509.DNSName("*.example.org")]))
    assert site.check() == []


def test_a_certificate_for_another_name(site: Site) -> None:
    names = [x509.DNSName("www.example.org"), x509.DNSName("*.mx.example.org")]
    with_tls(site, *make_certificate(names))
    verify = "senders that verify certificates (MTA-STS, DANE with names) will not deliver over it"
    assert site.check() == [
        error(
            "tls -> certificate: tls/cert.pem names www.example.org, *.mx.example.org, not "
            f"server.hostname mx.example.org: {verify}"
        )
    ]
    with_tls(site, *make_certificate(None))
    assert site.check() == [
        error(
            "tls -> certificate: tls/cert.pem names no host (no subjectAltName), not "
            f"server.hostname mx.example.org: {verify}"
        )
    ]


def test_an_expired_certificate(site: Site) -> None:
    cert, _ = with_tls(site, *make_certificate(MX, start=datetime.now(UTC) - timedelta(days=100)))
    assert site.check() == [
        error(
            f"tls -> certificate: tls/cert.pem: expired on {not_after(cert):%Y-%m-%d}: senders "
            "that verify certificates refuse it (renew it, then send smtpkit serve SIGHUP)"
        )
    ]


def test_a_certificate_about_to_expire(site: Site) -> None:
    cert, _ = with_tls(site, *make_certificate(MX, days=10))
    assert site.check() == [
        error(
            f"tls -> certificate: tls/cert.pem: expires on {not_after(cert):%Y-%m-%d}, in 10 "
            "days (renew it, then send smtpkit serve SIGHUP)"
        )
    ]
    with_tls(site, *make_certificate(MX, days=15))
    assert site.check() == []


def test_a_certificate_not_valid_yet(site: Site) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=2)
    with_tls(site, *make_certificate(MX, start=start))
    assert site.check() == [
        error(
            f"tls -> certificate: tls/cert.pem: not valid before {start:%Y-%m-%d %H:%M} UTC: "
            "senders that verify certificates refuse it until then (is this machine's clock "
            "right?)"
        )
    ]


def test_a_key_that_is_not_the_certificates(site: Site) -> None:
    cert, _ = make_certificate(MX)
    _, other_key = make_certificate(MX)
    with_tls(site, cert, other_key)
    assert site.check() == [
        error(
            "tls -> key: tls/key.pem is not the key of tls/cert.pem: serve cannot load the "
            "pair (replace both from the same issuance)"
        )
    ]


def test_files_that_are_missing_or_no_pem(site: Site) -> None:
    cert, key = with_tls(site, *make_certificate(MX))
    key.unlink()
    assert site.check() == [error("tls -> key: tls/key.pem: no such file")]
    site.file("tls/key.pem", b"not a key")
    cert.write_bytes(b"not a certificate")
    assert site.check() == [
        error("tls -> certificate: tls/cert.pem: no PEM certificate in it"),
        error("tls -> key: tls/key.pem: no PEM private key in it"),
    ]


def test_a_key_with_a_passphrase(site: Site) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert, _ = make_certificate(MX, key=key)
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with_tls(site, cert, locked)
    assert site.check() == [
        error(
            "tls -> key: tls/key.pem: encrypted with a passphrase, which serve cannot enter "
            "(write it unencrypted, mode 0600)"
        )
    ]


def test_a_key_openssl_refuses(site: Site) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with_tls(site, *make_certificate(MX, key=weak))
    problems = site.check()
    if not problems:
        unavailable("this OpenSSL accepts 1024-bit RSA keys (security level below 2)")
    assert problems == [
        error("tls -> certificate: tls/cert.pem: OpenSSL refuses it (ee key too small)")
    ]


def test_tls_files_only_root_can_read(site: Site, open_tmp_path: Path) -> None:
    # Let's Encrypt's layout: live/ links into archive/, both root's and closed.
    live, archive = open_tmp_path / "live", open_tmp_path / "archive"
    live.mkdir(mode=0o755)
    archive.mkdir(mode=0o700)
    cert, key = make_certificate(MX)
    (archive / "cert1.pem").write_bytes(cert)
    (archive / "privkey1.pem").write_bytes(key)
    (live / "cert.pem").symlink_to("../archive/cert1.pem")
    (live / "privkey.pem").symlink_to("../archive/privkey1.pem")
    site.settings["tls"] = {
        "certificate": str(live / "cert.pem"),
        "key": str(live / "privkey.pem"),
    }
    assert site.check() == [
        error(
            f"cannot read tls -> certificate {live / 'cert.pem'}: {archive} is owned by root, "
            f"mode 0700; {RUNS_AS} {SERVE_AS_ROOT}"
        ),
        error(
            f"cannot read tls -> key {live / 'privkey.pem'}: {archive} is owned by root, mode "
            f"0700; {RUNS_AS} {SERVE_AS_ROOT}"
        ),
    ]
    os.chmod(archive, 0o755)
    os.chmod(archive / "privkey1.pem", 0o600)
    assert site.check() == [
        error(
            f"cannot read tls -> key {live / 'privkey.pem'}: owned by root, mode 0600; "
            f"{RUNS_AS} {SERVE_AS_ROOT}"
        )
    ]
    os.chown(archive / "privkey1.pem", NOBODY.pw_uid, NOBODY.pw_gid)
    assert site.check() == []


def test_the_configs_own_notes_come_first(site: Site) -> None:
    site.settings["server"]["max_recipients"] = 50
    assert site.check() == [
        Problem(
            False,
            f"server -> max_recipients is deprecated: move it to [limits] ({site.config_path})",
            note=True,
        )
    ]


# --- server.listen and server.hostname ----------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "texts"),
    [
        (["0.0.0.0:25", "[::]:25", "127.0.0.1:587"], []),
        (
            ["localhost:25"],
            [
                "localhost:25 is not an IP address: write the address to listen on (like "
                "192.0.2.1:25, 0.0.0.0:25 or [::]:25), so that what is bound does not depend on "
                "name lookups",
            ],
        ),
        (["0.0.0.0:25", "[::1]:25", "192.0.2.1:2525"], []),
    ],
)
def test_listen_addresses(site: Site, listen: list[str], texts: list[str]) -> None:
    site.settings["server"]["listen"] = listen
    assert site.check() == [error(f"server -> listen: {text}") for text in texts]


def test_a_listen_address_that_cannot_be_bound_is_the_configs_error(site: Site) -> None:
    """The loader refuses it (tests/test_config.py), so check, serve and every other
    command say the same line."""
    site.settings["server"]["listen"] = ["127.0.0.1:25", "127.0.0.1:25"]
    with pytest.raises(ConfigError) as caught:
        site.check()
    assert str(caught.value) == (
        f"server -> listen: 127.0.0.1:25 is listed twice ({site.config_path})"
    )


def test_no_port_25_is_a_note(site: Site) -> None:
    site.settings["server"]["listen"] = ["127.0.0.1:2525", "[::1]:2525"]
    assert site.check() == [
        Problem(
            False,
            "server -> listen: nothing listens on port 25, where mail from the internet "
            "arrives (fine for tests, or behind a forward from port 25)",
            note=True,
        )
    ]


@pytest.mark.parametrize(
    ("hostname", "what"),
    [
        ("localhost", "localhost is every machine's name for itself"),
        ("localhost.localdomain", "localhost.localdomain is every machine's name for itself"),
        ("mx", "mx is not a full name (no dot)"),
        ("192.0.2.1", "192.0.2.1 is an IP address, not a name"),
        ("[2001:db8::1]", "[2001:db8::1] is an IP address, not a name"),
        ("mx_1.example.org", "'mx_1.example.org' is not a valid host name"),
    ],
)
def test_host_names_senders_cannot_use(site: Site, hostname: str, what: str) -> None:
    site.settings["server"]["hostname"] = hostname
    assert site.check() == [
        error(
            f"server -> hostname: {what}: senders greet and check this name; an MX record "
            "must point to a real name (RFC 5321 5.1)"
        )
    ]


def test_fatal_problems_are_where_mail_goes(site: Site) -> None:
    """Serve refuses to start for these only: everything else is a warning."""
    site.settings["server"]["hostname"] = "localhost"
    site.settings["aliases"]["sales@example.org"] = "nobody@example.org"
    os.chown(site.directory / "users/alice@example.org/tmp", 0, 0)
    os.chmod(site.directory / "journal", 0o777)
    problems = site.check()
    assert [p.text for p in problems if p.fatal] == [
        f"cannot write users/alice@example.org/tmp: owned by root, mode 0700; {RUNS_AS}"
    ]
    assert len(problems) == 4
