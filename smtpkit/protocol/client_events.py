"""What the server said, as frozen values produced by ``ClientConnection.next_event()``.

Every reply the engine reads becomes one of these, except the replies it handles itself: an
``RSET`` it sent before a transaction, a challenge it answered during AUTH, the reply to the
lone dot after a ``354`` no recipient needed. A transaction always ends with exactly one
``TransactionDone``, and a connection with exactly one ``Closed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpkit.protocol.replies import Reply
from smtpkit.protocol.reply_parser import Extensions

__all__ = [
    "AuthResult",
    "ClientEvent",
    "Closed",
    "Greeting",
    "HelloRefused",
    "MailResult",
    "MessageResult",
    "ProtocolError",
    "Ready",
    "RecipientResult",
    "ResetResult",
    "SendData",
    "StartTlsNow",
    "StartTlsRefused",
    "TransactionDone",
]


def _positive(reply: Reply | None) -> bool:
    return reply is not None and 200 <= reply.code < 300


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's first reply (RFC 5321 4.3.1). A 2xx greeting is answered with EHLO (LHLO)
    by the engine; anything else (554) refuses service: call ``quit()``. A 421 greeting
    gives ``Closed`` instead."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Ready:
    """EHLO or LHLO (or the HELO fallback, ``extended`` false) was accepted: the connection
    takes ``start_tls()``, ``authenticate()``, ``send_envelope()``, ``reset()`` and
    ``quit()``. Comes again after STARTTLS, with what the server offers over TLS."""

    reply: Reply
    extensions: Extensions
    extended: bool = True


@dataclass(frozen=True, slots=True)
class HelloRefused:
    """EHLO and the HELO fallback (or LHLO) were refused: call ``quit()``."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class StartTlsNow:
    """The ``220`` to STARTTLS (RFC 3207 4): wrap the socket in TLS, then call
    ``tls_started()``; nothing is read or written in the clear any more."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class StartTlsRefused:
    """STARTTLS was refused; the connection goes on in the clear, if the caller wants it."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The end of an AUTH exchange (RFC 4954 4): ``235`` is success."""

    reply: Reply

    @property
    def ok(self) -> bool:
        return self.reply.code == 235


@dataclass(frozen=True, slots=True)
class MailResult:
    """The reply to ``MAIL FROM``. When it is not 2xx, the transaction has failed for every
    recipient (``TransactionDone`` says so)."""

    reply: Reply

    @property
    def ok(self) -> bool:
        return _positive(self.reply)


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The reply to one ``RCPT TO``, in the order they were sent."""

    address: str
    reply: Reply

    @property
    def ok(self) -> bool:
        return _positive(self.reply)


@dataclass(frozen=True, slots=True)
class SendData:
    """``354`` with at least one recipient accepted: stream the message with
    ``send_data()``, then ``end_data()``."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class MessageResult:
    """The server's word on the message for ``recipients`` (accepted at RCPT): the reply to
    the final dot, or the refusal of DATA itself. SMTP gives one for every accepted
    recipient together; LMTP (RFC 2033 4.2) one per recipient, in the order of the RCPTs."""

    reply: Reply
    recipients: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return _positive(self.reply)


@dataclass(frozen=True, slots=True)
class TransactionDone:
    """One envelope's transaction is over; ``results`` pairs each recipient (in the order
    given) with the reply that decides it: MAIL's refusal, its RCPT's refusal, or the
    message's reply (DATA's refusal, the final dot's reply, a 421 that came first).

    ``None`` means the connection was lost before any such reply: RFC 5321 3.8 asks the
    client to treat that as a 451 (try again later). After this event the connection is
    ``READY`` again (or closes, with ``Closed`` right after).
    """

    results: tuple[tuple[str, Reply | None], ...]

    @property
    def delivered(self) -> tuple[str, ...]:
        """Recipients whose message the server took (2xx)."""
        return tuple(a for a, r in self.results if _positive(r))

    @property
    def deferred(self) -> tuple[str, ...]:
        """Recipients to try again: a 4xx, or no reply at all."""
        return tuple(a for a, r in self.results if r is None or 400 <= r.code < 500)

    @property
    def failed(self) -> tuple[str, ...]:
        """Recipients refused for good (5xx)."""
        return tuple(a for a, r in self.results if r is not None and r.code >= 500)


@dataclass(frozen=True, slots=True)
class ResetResult:
    """The reply to ``reset()`` (RSET, RFC 5321 4.1.1.5)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The server broke the protocol: a line that is not a reply, a reply over the limits,
    a reply when none was due, the connection closed in the middle. ``Closed`` follows
    (after ``TransactionDone`` if a transaction was under way): close the socket."""

    description: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is over: QUIT was answered (``reply`` 221), the server sent 421
    (RFC 5321 3.8), or it closed (``reply`` None). Close the socket."""

    reply: Reply | None


ClientEvent = (
    Greeting
    | Ready
    | HelloRefused
    | StartTlsNow
    | StartTlsRefused
    | AuthResult
    | MailResult
    | RecipientResult
    | SendData
    | MessageResult
    | TransactionDone
    | ResetResult
    | ProtocolError
    | Closed
)
