"""International (RFC 6531) users in the password file and at AUTH: one line per user under the
canonical name (NFC, lower case, the domain's A-label), found by any spelling of it; a line in
another spelling is a problem naming the canonical form; look-alikes (U+212A KELVIN SIGN,
fullwidth letters) reach nobody's password. SASL PLAIN and LOGIN carry the name as UTF-8.

Spellings are written with escapes: an NFD name looks just like its NFC one in an editor.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpkit import auth
from smtpkit.auth import PasswordFile, hash_password
from smtpkit.errors import UserError
from smtpkit.limits import Limits
from smtpkit.protocol import replies
from smtpkit.sasl import Credentials, Exchange, SaslError
from smtpkit.server import authn
from smtpkit.server.authn import PasswordChecker
from tests.test_auth import count_verifications

DOMAINS = ("example.org", "xn--bcher-kva.example")
MUELLER = "m\u00fcller@xn--bcher-kva.example"  # the canonical form
KUEHN = "k\u00fchn@xn--bcher-kva.example"
# Every spelling of MUELLER a login may use.
SPELLINGS = [
    MUELLER,
    "m\u00fcller@b\u00fccher.example",  # U-label domain
    "mu\u0308ller@bu\u0308cher.example",  # NFD, local part and domain
    "M\u00dcLLER@B\u00dcCHER.EXAMPLE",  # upper case
    "Mu\u0308ller@xn--BCHER-KVA.example",  # NFD, upper case, A-label in upper case
]
# Look-alikes: what NFC or IDNA would map onto a user, refused instead.
LOOK_ALIKES = [
    ("\u212a\u00fchn@xn--bcher-kva.example", KUEHN),  # KELVIN SIGN for K
    ("\uff4d\u00fcller@xn--bcher-kva.example", MUELLER),  # FULLWIDTH M
    ("m\u00fcller@\uff42\u00fccher.example", MUELLER),  # FULLWIDTH B in the domain
    ("m\u00fcller@b\u00fccher\u3002example", MUELLER),  # IDEOGRAPHIC FULL STOP
]


@pytest.fixture
def passwd(tmp_path: Path) -> PasswordFile:
    return PasswordFile(tmp_path / "passwd", DOMAINS)


# --- the password file --------------------------------------------------------------------


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_set_writes_the_canonical_name_and_every_spelling_verifies(
    passwd: PasswordFile, spelling: str
) -> None:
    assert passwd.set(spelling, "gr\u00fc\u00dfe") is False
    data = passwd.path.read_bytes()
    assert data.startswith(b"m\xc3\xbcller@xn--bcher-kva.example:{ARGON2ID}$argon2id$")
    assert data.count(b"\n") == 1
    assert passwd.problems() == ()
    assert passwd.addresses() == {MUELLER}
    for other in SPELLINGS:
        assert passwd.has(other)
        assert passwd.verify(other, "gr\u00fc\u00dfe")
        assert passwd.verify(other, "gr\u00fc\u00dfe".encode())
        assert not passwd.verify(other, "grusse")


def test_a_utf8_line_written_by_hand_in_canonical_form_is_used(passwd: PasswordFile) -> None:
    passwd.path.write_bytes(
        f"# international users\n{MUELLER}:{hash_password('one')}\n"
        f"alice@example.org:{hash_password('two')}\n".encode()
    )
    assert passwd.problems() == ()
    assert passwd.addresses() == {MUELLER, "alice@example.org"}
    assert passwd.verify("mu\u0308ller@bu\u0308cher.example", "one")
    assert passwd.verify("alice@example.org", "two")


def test_lines_in_another_spelling_are_problems_naming_the_canonical_form(
    passwd: PasswordFile,
) -> None:
    good = hash_password("good")
    passwd.path.write_bytes(
        "\n".join(
            [
                f"m\u00fcller@b\u00fccher.example:{good}",  # 1: U-label domain
                f"mu\u0308ller@xn--bcher-kva.example:{good}",  # 2: NFD
                f"M\u00fcller@xn--bcher-kva.example:{good}",  # 3: upper case
                f"\u212a\u00fchn@xn--bcher-kva.example:{good}",  # 4: KELVIN SIGN
                f"\uff4d\u00fcller@xn--bcher-kva.example:{good}",  # 5: FULLWIDTH M
                f"m\u00fcller@andere.example:{good}",  # 6: not ours
                f"{KUEHN}:{good}",  # 7: fine
            ]
        ).encode()
        + b"\nm\xfcller@xn--bcher-kva.example:"  # 8: Latin-1, no UTF-8
        + good.encode()
        + b"\n"
    )
    assert passwd.problems() == (
        "passwd line 1: 'm\u00fcller@b\u00fccher.example' must be written "
        f"{MUELLER} (as Dovecot looks it up)",
        "passwd line 2: 'mu\\u0308ller@xn--bcher-kva.example' (decomposed: not in NFC) must be "
        f"written {MUELLER} (as Dovecot looks it up)",
        f"passwd line 3: 'M\u00fcller@xn--bcher-kva.example' must be written {MUELLER} "
        "(as Dovecot looks it up)",
        "passwd line 4: '\u212a\u00fchn@xn--bcher-kva.example' is not a valid address: bad local "
        "part '\u212a\u00fchn': U+212A KELVIN SIGN is a duplicate of 'K' (a singleton "
        "decomposition)",
        "passwd line 5: '\uff4d\u00fcller@xn--bcher-kva.example' is not a valid address: bad "
        "local part '\uff4d\u00fcller': U+FF4D FULLWIDTH LATIN SMALL LETTER M is a fullwidth "
        "form of 'm'",
        "passwd line 6: 'm\u00fcller@andere.example' is not in a local domain (configured: "
        "example.org, xn--bcher-kva.example)",
        "passwd line 8: 'm\\udcfcller@xn--bcher-kva.example' is not a valid address: bad local "
        "part 'm\\udcfcller': U+DCFC is not allowed (PRECIS: other)",
    )
    assert passwd.addresses() == {KUEHN}
    for spelling in SPELLINGS:
        assert not passwd.verify(spelling, "good")
    assert passwd.verify(KUEHN, "good")


def test_set_and_remove_replace_every_spelling_but_never_a_look_alike(
    passwd: PasswordFile,
) -> None:
    kelvin = "\u212a\u00fchn@xn--bcher-kva.example:{PLAIN}k"
    passwd.path.write_text(
        f"mu\u0308ller@xn--bcher-kva.example:{{PLAIN}}one:::::quota=1\n"
        f"{kelvin}\n"
        f"M\u00fcller@b\u00fccher.example:{{PLAIN}}two\n"
        f"k\u00fchn@b\u00fccher.example:{{PLAIN}}three\n"
    )
    assert passwd.set("M\u00dcLLER@b\u00fccher.example", "new") is True
    lines = passwd.path.read_text().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [
        MUELLER,
        kelvin.split(":", 1)[0],
        "k\u00fchn@b\u00fccher.example",
    ]
    assert lines[0].endswith(":::::quota=1")
    assert passwd.verify(MUELLER, "new")
    # kühn's own line goes; the Kelvin sign's is no spelling of kühn and stays.
    assert passwd.remove("K\u00dcHN@xn--bcher-kva.example") is True
    assert passwd.remove(MUELLER) is True
    assert passwd.path.read_text() == f"{kelvin}\n"


@pytest.mark.parametrize(("look_alike", "user"), LOOK_ALIKES)
def test_look_alikes_reach_no_password_and_cost_a_verification(
    passwd: PasswordFile, monkeypatch: pytest.MonkeyPatch, look_alike: str, user: str
) -> None:
    passwd.set(user, "secret")
    seen = count_verifications(monkeypatch)
    assert not passwd.verify(look_alike, "secret")
    assert seen == [auth._DUMMY_HASH]  # as an unknown user: no timing tells them apart
    assert not passwd.has(look_alike)
    with pytest.raises(UserError, match="is not a valid address"):
        passwd.set(look_alike, "other")
    with pytest.raises(UserError, match="is not a valid address"):
        passwd.remove(look_alike)
    assert passwd.verify(user, "secret")


# --- SASL ------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_plain_and_login_decode_the_user_name_as_utf8() -> None:
    nfd = "mu\u0308ller@bu\u0308cher.example"
    plain = Exchange("PLAIN").feed(b64(f"\0{nfd}\0p\u00e4ss".encode()))
    assert plain == Credentials(nfd, "p\u00e4ss")
    login = Exchange("LOGIN")
    assert login.feed(None) == b64(b"Username:")
    assert login.feed(b64(MUELLER.encode())) == b64(b"Password:")
    assert login.feed(b64("p\u00e4ss".encode())) == Credentials(MUELLER, "p\u00e4ss")


@pytest.mark.parametrize(
    "message",
    [
        b"\0m\xfcller@xn--bcher-kva.example\0pass",  # Latin-1 user name
        b"\0m\xc3\xbcller@xn--bcher-kva.example\0p\xe4ss",  # Latin-1 password
        b"m\xfc\0m\xc3\xbcller@xn--bcher-kva.example\0pass",  # Latin-1 authzid
        b"\0m\xc3\xbc\xc3ller@xn--bcher-kva.example\0pass",  # a truncated sequence
        b"\0m\xed\xb3\xbcller@xn--bcher-kva.example\0pass",  # an encoded surrogate
    ],
)
def test_bytes_that_are_no_utf8_cannot_be_decoded(message: bytes) -> None:
    with pytest.raises(SaslError) as caught:
        Exchange("PLAIN").feed(b64(message))
    assert caught.value.reply == replies.AUTH_BAD_RESPONSE
    login = Exchange("LOGIN")
    login.feed(None)
    with pytest.raises(SaslError) as caught:
        login.feed(b64(b"m\xfcller@xn--bcher-kva.example"))
    assert caught.value.reply == replies.AUTH_BAD_RESPONSE


def test_an_authzid_may_be_another_spelling_of_the_user_but_not_another_user() -> None:
    nfd = "Mu\u0308ller@bu\u0308cher.example"
    same = Exchange("PLAIN").feed(b64(f"{MUELLER}\0{nfd}\0pw".encode()))
    assert same == Credentials(nfd, "pw")
    for other in (KUEHN, "\uff4d\u00fcller@xn--bcher-kva.example", "not an address"):
        with pytest.raises(SaslError) as caught:
            Exchange("PLAIN").feed(b64(f"{other}\0{nfd}\0pw".encode()))
        assert caught.value.reply == replies.AUTH_FAILED


# --- the AUTH checker --------------------------------------------------------------------------


@pytest.fixture
def checker(passwd: PasswordFile) -> Iterator[PasswordChecker]:
    passwd.set(MUELLER, "m-pass")
    passwd.set(KUEHN, "k-pass")
    made = PasswordChecker(passwd, DOMAINS, Limits(), lambda call: call())
    yield made
    made.close()


def check(checker: PasswordChecker, user: str, password: str) -> str | None:
    """What the checker answers, waiting for its pool."""
    answered = threading.Event()
    answers: list[str | None] = []

    def done(answer: str | None) -> None:
        answers.append(answer)
        answered.set()

    checker.check(user, password, done)
    assert answered.wait(30)
    (answer,) = answers
    return answer


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_logs_in_as_the_canonical_user(
    checker: PasswordChecker, spelling: str
) -> None:
    assert check(checker, spelling, "m-pass") == MUELLER
    assert check(checker, spelling, "k-pass") is None


@pytest.mark.parametrize(("look_alike", "user"), LOOK_ALIKES)
def test_a_look_alike_never_logs_in(checker: PasswordChecker, look_alike: str, user: str) -> None:
    password = "k-pass" if user == KUEHN else "m-pass"
    assert check(checker, look_alike, password) is None
    # LATIN SMALL LETTER K WITH CEDILLA is a letter of its own: another, unknown user.
    assert check(checker, "\u0137\u00fchn@xn--bcher-kva.example", "k-pass") is None


def test_failures_count_once_per_user_whatever_the_spelling(checker: PasswordChecker) -> None:
    for spelling in SPELLINGS:
        checker.failed("192.0.2.1", spelling)
    checker.failed("192.0.2.1", "\u212a\u00fchn@xn--bcher-kva.example")
    assert checker.user_failures(MUELLER) == len(SPELLINGS)
    assert checker.user_failures("mu\u0308ller@bu\u0308cher.example") == len(SPELLINGS)
    # A look-alike logs in as nobody, but its failure is one more attempt at the user it
    # mimics: it counts to kühn (str.lower() makes the Kelvin sign a "k").
    assert checker.user_failures(KUEHN) == 1
    assert checker.user_failures("\u212a\u00fchn@xn--bcher-kva.example") == 1


def test_counting_a_failure_never_raises(
    checker: PasswordChecker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It runs on the event loop: a name that cannot even be checked (here, a table that
    cannot be loaded) still counts, lower-cased, instead of ending the worker."""

    def broken(*args: object, **kwargs: object) -> str:
        raise ModuleNotFoundError("No module named 'idna.uts46data'")

    monkeypatch.setattr(authn, "normalize_address", broken)
    checker.failed("192.0.2.1", "M\u00fcller@b\u00fccher.example")
    assert checker.user_failures("m\u00fcller@b\u00fccher.example") == 1
    assert check(checker, MUELLER, "m-pass") is None  # the login fails, nothing more
