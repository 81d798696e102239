"""Line limits in AUTH (RFC 4954 4): an AUTH command and each response line may be up to
``max_auth_line`` octets, since a base64 initial response for a long password is longer than
a command line; every other command keeps ``max_command_line`` (RFC 5321 4.5.3.1.4)."""

from __future__ import annotations

import base64

import pytest

from smtpkit.limits import Limits
from smtpkit.protocol import (
    NEED_DATA,
    Auth,
    BadCommand,
    Hello,
    Noop,
    ServerConnection,
    State,
)
from smtpkit.protocol import replies as r
from smtpkit.protocol.events import AuthResponse

LIMITS = Limits()
AUTH_MAX = LIMITS.max_auth_line
COMMAND_MAX = LIMITS.max_command_line


def ready() -> ServerConnection:
    conn = ServerConnection(LIMITS)
    conn.send(r.greeting("mx.test"))
    conn.receive_data(b"EHLO c\r\n")
    assert isinstance(conn.next_event(), Hello)
    conn.send(r.helo("mx.test", "c"))
    assert conn.state is State.READY
    return conn


def plain(password: bytes) -> bytes:
    """The base64 PLAIN initial response of alice@example.org with ``password``."""
    return base64.b64encode(b"\0alice@example.org\0" + password)


def padded(prefix: bytes, total: int) -> bytes:
    """A line of exactly ``total`` octets, CRLF included, that starts with ``prefix`` and
    goes on with base64 text."""
    return prefix + b"A" * (total - len(prefix) - 2) + b"\r\n"


def test_auth_plain_with_a_1000_byte_password_is_one_auth_event() -> None:
    initial = plain(b"p" * 1000)
    assert len(initial) > COMMAND_MAX
    conn = ready()
    conn.receive_data(b"AUTH PLAIN " + initial + b"\r\n")
    assert conn.next_event() == Auth("PLAIN", initial.decode())


@pytest.mark.parametrize("verb", [b"auth", b"Auth", b"aUtH"])
def test_the_auth_verb_in_any_case_gets_the_auth_limit(verb: bytes) -> None:
    initial = plain(b"x" * 900)
    conn = ready()
    conn.receive_data(verb + b" PLAIN " + initial + b"\r\n")
    assert conn.next_event() == Auth("PLAIN", initial.decode())


def test_an_auth_line_of_exactly_the_limit_is_read_one_more_octet_is_too_long() -> None:
    conn = ready()
    # Whether the mechanism is offered is the session's call; the line is read whole.
    conn.receive_data(padded(b"AUTH CRAM-MD5 ", AUTH_MAX))
    event = conn.next_event()
    assert isinstance(event, Auth) and len(event.initial or "") == AUTH_MAX - 16
    conn.send(r.AUTH_FAILED)
    conn.receive_data(padded(b"AUTH PLAIN ", AUTH_MAX + 1))
    event = conn.next_event()
    assert isinstance(event, BadCommand) and event.reply == r.COMMAND_TOO_LONG
    conn.send(event.reply)
    # The dialogue goes on after the refused line.
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() == Noop()


def test_a_long_auth_line_may_arrive_an_octet_at_a_time() -> None:
    initial = plain(b"s" * 1000)
    line = b"AUTH PLAIN " + initial + b"\r\n"
    conn = ready()
    for i in range(len(line) - 1):
        conn.receive_data(line[i : i + 1])
        assert conn.next_event() is NEED_DATA
    conn.receive_data(line[-1:])
    assert conn.next_event() == Auth("PLAIN", initial.decode())


@pytest.mark.parametrize(
    "prefix",
    [b"NOOP ", b"MAIL FROM:<", b"RCPT TO:<", b"AUTHX ", b"XAUTH ", b"HELP AUTH ", b" AUTH "],
)
def test_every_other_command_keeps_the_command_line_limit(prefix: bytes) -> None:
    conn = ready()
    conn.receive_data(padded(prefix, COMMAND_MAX))
    first = conn.next_event()
    assert not (isinstance(first, BadCommand) and first.reply == r.COMMAND_TOO_LONG)
    conn.send(first.reply if isinstance(first, BadCommand) else r.OK)
    conn = ready()
    conn.receive_data(padded(prefix, COMMAND_MAX + 1))
    event = conn.next_event()
    assert isinstance(event, BadCommand) and event.reply == r.COMMAND_TOO_LONG


def test_an_over_long_command_is_not_buffered_even_if_auth_follows_in_it() -> None:
    """A line that is no AUTH command is dropped once it passes the command limit, whatever
    comes later in it: text that reads "AUTH " further on does not raise its limit."""
    conn = ready()
    conn.receive_data(b"NOOP " + b"x" * COMMAND_MAX)
    assert conn.next_event() is NEED_DATA
    assert conn.buffered == 0
    conn.receive_data(b"AUTH PLAIN " + b"A" * 2000)
    assert conn.next_event() is NEED_DATA
    assert conn.buffered == 0
    conn.receive_data(b"\r\n")
    event = conn.next_event()
    assert isinstance(event, BadCommand) and event.reply == r.COMMAND_TOO_LONG


def test_an_auth_line_is_buffered_up_to_the_auth_limit_and_no_further() -> None:
    conn = ready()
    conn.receive_data(b"AUTH PLAIN " + b"A" * (AUTH_MAX - 20))
    assert conn.next_event() is NEED_DATA
    assert conn.buffered == AUTH_MAX - 9
    conn.receive_data(b"A" * 100)
    assert conn.next_event() is NEED_DATA
    assert conn.buffered == 0
    conn.receive_data(b"\r\n")
    event = conn.next_event()
    assert isinstance(event, BadCommand) and event.reply == r.COMMAND_TOO_LONG


def test_a_continuation_line_may_be_as_long_as_an_auth_line() -> None:
    response = plain(b"q" * 1000)
    conn = ready()
    conn.receive_data(b"AUTH PLAIN\r\n")
    assert conn.next_event() == Auth("PLAIN", None)
    conn.send(r.challenge(""))
    assert conn.state is State.AUTH
    conn.receive_data(response + b"\r\n")
    assert conn.next_event() == AuthResponse(response.decode())
    conn.send(r.AUTH_FAILED)
    assert conn.state is State.READY
    conn.receive_data(b"AUTH LOGIN\r\n")
    assert conn.next_event() == Auth("LOGIN", None)
    conn.send(r.challenge("VXNlcm5hbWU6"))
    conn.receive_data(padded(b"", AUTH_MAX + 1))
    event = conn.next_event()
    assert isinstance(event, AuthResponse) and event.refusal == r.COMMAND_TOO_LONG
