"""The ServerConnection API contract the session relies on: pausing, send(), 421, EOF, TLS."""

from __future__ import annotations

import pytest

from smtpkit.limits import Limits
from smtpkit.protocol import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    DataChunk,
    EndOfData,
    Hello,
    LocalProtocolError,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    ServerConnection,
    StartTls,
    State,
)
from smtpkit.protocol import replies as r
from tests.protocol.protocol_harness import run


def greeted(limits: Limits | None = None) -> ServerConnection:
    conn = ServerConnection(limits or Limits())
    assert conn.send(r.greeting("mx.test")) == b"220 mx.test ESMTP smtpkit\r\n"
    assert conn.state is State.GREETED
    return conn


def ready(extended: bool = True) -> ServerConnection:
    conn = greeted()
    conn.receive_data(b"EHLO c\r\n" if extended else b"HELO c\r\n")
    assert isinstance(conn.next_event(), Hello)
    conn.send(r.helo("mx.test", "c"))
    assert conn.state is State.READY
    return conn


def in_data() -> ServerConnection:
    conn = ready()
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    for reply in (r.OK_SENDER, r.OK_RECIPIENT, r.START_DATA):
        conn.next_event()
        conn.send(reply)
    assert conn.state is State.DATA
    return conn


# --- greeting and pausing ----------------------------------------------------------------------


def test_nothing_is_parsed_before_the_greeting() -> None:
    conn = ServerConnection(Limits())
    assert conn.state is State.INITIAL
    conn.receive_data(b"EHLO early\r\n")
    assert conn.next_event() is PAUSED
    conn.send(r.greeting("mx.test"))
    assert conn.next_event() == Hello("early", True)


def test_refused_greeting_still_opens_the_dialogue() -> None:
    # RFC 5321 3.1: a 554 greeting; the session then refuses everything but QUIT.
    conn = ServerConnection(Limits())
    conn.send(r.Reply(554, "5.3.2", ("No service",)))
    assert conn.state is State.GREETED


def test_paused_until_the_reply_is_sent() -> None:
    conn = greeted()
    conn.receive_data(b"NOOP\r\nNOOP\r\n")
    assert conn.next_event() == Noop()
    assert conn.next_event() is PAUSED
    assert conn.next_event() is PAUSED
    assert conn.send(r.OK) == b"250 2.0.0 OK\r\n"
    assert conn.next_event() == Noop()
    conn.send(r.OK)
    assert conn.next_event() is NEED_DATA


def test_need_data_for_a_partial_line() -> None:
    conn = greeted()
    conn.receive_data(b"NO")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"OP\r")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\n")
    assert conn.next_event() == Noop()


def test_send_with_nothing_pending_raises() -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError):
        conn.send(r.OK)
    conn.receive_data(b"NOOP\r\n")
    conn.next_event()
    conn.send(r.OK)
    with pytest.raises(LocalProtocolError):
        conn.send(r.OK)


def test_data_chunks_take_no_reply() -> None:
    conn = in_data()
    conn.receive_data(b"x\r\n")
    assert conn.next_event() == DataChunk(b"x\r\n")
    with pytest.raises(LocalProtocolError):
        conn.send(r.OK)


def test_sentinels_repr() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(PAUSED) == "PAUSED"


# --- transitions driven by the reply -----------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "state"),
    [
        (r.OK_SENDER, State.MAIL),
        (r.Reply(550, "5.7.1", ("no",)), State.READY),
        (r.LOCAL_ERROR, State.READY),
    ],
)
def test_mail_transition_depends_on_reply(reply: r.Reply, state: State) -> None:
    conn = ready()
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    assert isinstance(conn.next_event(), MailFrom)
    conn.send(reply)
    assert conn.state is state


def test_rcpt_transitions() -> None:
    conn = ready()
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\n" + b"RCPT TO:<c@d.example>\r\n" * 3)
    conn.next_event()
    conn.send(r.OK_SENDER)
    for reply, state in ((r.UNKNOWN_USER, State.MAIL), (r.OK_RECIPIENT, State.RCPT)):
        assert isinstance(conn.next_event(), RcptTo)
        conn.send(reply)
        assert conn.state is state
    conn.next_event()
    conn.send(r.TOO_MANY_RECIPIENTS)
    assert conn.state is State.RCPT


def test_data_refused_by_session_keeps_lines_as_commands() -> None:
    conn = ready()
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nNOOP\r\n")
    conn.next_event()
    conn.send(r.OK_SENDER)
    conn.next_event()
    conn.send(r.OK_RECIPIENT)
    assert conn.next_event() == Data()
    conn.send(r.LOCAL_ERROR)
    assert conn.state is State.RCPT
    assert conn.next_event() == Noop()


def test_end_of_data_returns_to_ready_whatever_the_code() -> None:
    for reply in (r.stored("X"), r.LOCAL_ERROR, r.BARE_NEWLINE_IN_DATA):
        conn = in_data()
        conn.receive_data(b".\r\n")
        assert conn.next_event() == EndOfData(None, 0)
        assert conn.next_event() is PAUSED
        conn.send(reply)
        assert conn.state is State.READY
        assert conn.extended


def test_quit_closes() -> None:
    conn = ready()
    conn.receive_data(b"QUIT\r\nNOOP\r\n")
    assert conn.next_event() == Quit()
    conn.send(r.closing("mx.test"))
    assert conn.state is State.CLOSED
    assert conn.next_event() is PAUSED
    assert conn.buffered == 0


def test_extended_follows_last_hello() -> None:
    assert ready(extended=True).extended
    assert not ready(extended=False).extended
    conn = ready(extended=True)
    conn.receive_data(b"HELO again\r\n")
    conn.next_event()
    conn.send(r.Reply(550, "5.7.1", ("go away",)))
    assert conn.extended  # a refused HELO changes nothing
    conn.receive_data(b"HELO again\r\n")
    conn.next_event()
    conn.send(r.helo("mx.test", "again"))
    assert not conn.extended


# --- 421 ---------------------------------------------------------------------------------------


def test_421_with_nothing_pending() -> None:
    conn = greeted()
    assert conn.send(r.TIMEOUT).startswith(b"421 4.4.2 ")
    assert conn.state is State.CLOSED
    assert conn.next_event() is PAUSED
    conn.receive_data(b"NOOP\r\n")  # ignored
    assert conn.next_event() is PAUSED
    with pytest.raises(LocalProtocolError):
        conn.send(r.OK)
    conn.send(r.SHUTTING_DOWN)  # a second 421 is harmless


def test_421_before_greeting() -> None:
    conn = ServerConnection(Limits())
    conn.send(r.TOO_MANY_CONNECTIONS)
    assert conn.state is State.CLOSED


def test_421_while_a_command_is_pending() -> None:
    conn = ready()
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    conn.next_event()
    conn.send(r.TOO_MANY_ERRORS)
    assert conn.state is State.CLOSED


def test_421_mid_data() -> None:
    conn = in_data()
    conn.receive_data(b"half a message\r\n")
    conn.next_event()
    conn.send(r.TIMEOUT)
    assert conn.state is State.CLOSED
    assert conn.next_event() is PAUSED


def test_421_after_end_of_data() -> None:
    conn = in_data()
    conn.receive_data(b".\r\n")
    conn.next_event()
    conn.send(r.SHUTTING_DOWN)
    assert conn.state is State.CLOSED


def test_421_after_bad_command() -> None:
    conn = greeted()
    conn.receive_data(b"FOO\r\n")
    conn.next_event()
    conn.send(r.TOO_MANY_ERRORS)
    assert conn.state is State.CLOSED


# --- EOF ---------------------------------------------------------------------------------------


def test_eof_after_complete_lines() -> None:
    conn = greeted()
    conn.receive_data(b"NOOP\r\nNOOP\r\nNOO")
    conn.receive_data(b"")
    assert conn.next_event() == Noop()
    conn.send(r.OK)
    assert conn.next_event() == Noop()
    conn.send(r.OK)
    assert conn.next_event() == ConnectionClosed()
    assert conn.state is State.CLOSED
    assert conn.next_event() is PAUSED


def test_eof_while_a_reply_is_pending() -> None:
    conn = greeted()
    conn.receive_data(b"QUIT\r\n")
    conn.receive_data(b"")
    assert conn.next_event() == Quit()
    conn.send(r.closing("mx.test"))
    assert conn.state is State.CLOSED


def test_bytes_after_eof_are_a_programming_error() -> None:
    conn = greeted()
    conn.receive_data(b"")
    conn.receive_data(b"")  # repeated EOF is fine
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"NOOP\r\n")


def test_eof_in_data() -> None:
    conn = in_data()
    conn.receive_data(b"line\r\npartial")
    conn.receive_data(b"")
    assert conn.next_event() == DataChunk(b"line\r\n")
    assert conn.next_event() == ConnectionClosed()
    assert conn.state is State.CLOSED


def test_eof_during_over_long_line() -> None:
    out = run([b"NOOP " + b"x" * 1000])
    assert out.codes == []
    assert out.events == [ConnectionClosed()]


# --- STARTTLS (RFC 3207) -----------------------------------------------------------------------


def test_starttls_discards_pipelined_plaintext() -> None:
    conn = ready()
    # CVE-2011-0411: commands injected after STARTTLS in the same packet.
    conn.receive_data(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<v@y.example>\r\n")
    assert conn.next_event() == StartTls()
    assert conn.send(r.TLS_READY) == b"220 2.0.0 Ready to start TLS\r\n"
    assert conn.buffered == 0
    assert conn.state is State.GREETED
    assert not conn.extended
    assert conn.next_event() is NEED_DATA
    # Inside TLS: the client must say EHLO again (RFC 3207 4.2).
    conn.receive_data(b"MAIL FROM:<a@b.example>\r\n")
    event = conn.next_event()
    assert event.reply == r.NEED_HELO  # type: ignore[union-attr]


def test_starttls_transcript() -> None:
    transcript = (
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\nRCPT TO:<x@y.example>\r\nDATA\r\n"
    )
    out = run([transcript], tls=True)
    assert out.codes == [250, 250, 220]
    out = run([transcript, b"EHLO c\r\nSTARTTLS\r\nRCPT TO:<x@y.example>\r\n"], tls=True)
    # Second STARTTLS arrives over TLS: the session refuses it, the engine keeps the state.
    assert out.codes == [250, 250, 220, 250, 503, 503]


def test_starttls_refused_keeps_the_buffer() -> None:
    out = run([b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n"], tls=False)
    assert out.codes == [250, 454, 250]


def test_starttls_before_ehlo() -> None:
    out = run([b"STARTTLS\r\nEHLO c\r\n"], tls=True)
    assert out.codes == [220]


def test_starttls_inside_data_is_content() -> None:
    out = run(
        [b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@c.example>\r\nDATA\r\nSTARTTLS\r\n.\r\n"],
        tls=True,
    )
    assert out.codes == [250, 250, 250, 354, 250]
    assert out.messages == [b"STARTTLS\r\n"]
