"""Every protocol limit in one frozen value, each with the rule or precedent behind it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BareNewline", "Limits"]


class BareNewline(StrEnum):
    """What a bare LF in message content does (``[server] bare_newline``).

    A bare CR is refused either way, and only ``<CRLF>.<CRLF>`` ever ends a message.
    """

    #: RFC 5321 2.3.8: lines end in CRLF only; the message is refused (550 5.6.0).
    REJECT = "reject"
    #: Postfix 3.9 ``smtpd_forbid_bare_newline = normalize`` precedent: a bare LF ends its
    #: line and is stored as CRLF, for old clients that send LF line ends.
    NORMALIZE = "normalize"


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits passed to the protocol engine and the session; never mutated."""

    # RFC 5321 4.5.3.1.4: a command line is at most 512 octets including the CRLF.
    max_command_line: int = 512
    # RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including the CRLF.
    max_text_line: int = 1000
    # RFC 1870: the SIZE we advertise; a message over it is refused with 552 5.3.4.
    max_message_size: int = 10 * 1024 * 1024
    # RFC 5321 4.5.3.1.8 asks for at least 100 recipients; more gets 452 4.5.3.
    max_recipients: int = 100
    # Postfix smtpd_hard_error_limit precedent: too many errors end the session with 421 4.7.0.
    # Every refused command counts, except as the two limits below say.
    max_errors: int = 10
    # Postfix smtpd_junk_command_limit precedent: NOOP, RSET, VRFY and HELP cost nothing until
    # this many since the last delivered message, then each one counts as an error.
    max_junk_commands: int = 100
    # Postfix smtpd_recipient_overshoot_limit precedent: the 452 for recipients past
    # max_recipients counts once per transaction (RFC 5321 4.5.3.1.10: that 452 is temporary,
    # the client sends the rest later; one that pipelined them all, RFC 2920, must still get
    # its first ones delivered), until this many more; then each one counts.
    max_recipient_overshoot: int = 1000
    # RFC 5321 4.5.3.2.7: the server waits at least 5 minutes for the next command.
    command_timeout: float = 300.0
    # RFC 5321 4.5.3.2.5-6: data blocks and the final dot; 10 minutes covers both.
    data_timeout: float = 600.0
    # Not an RFC rule: a session older than this is closed with 421 4.7.0 at its next pause
    # (never while its message is being made durable), whatever it keeps sending.
    max_session_time: float = 1800.0
    # A closed session whose client does not take its last replies keeps its socket (and
    # its place under the connection limits) this long at most.
    close_linger: float = 5.0
    # RFC 4954 4: an AUTH command line or response line may be up to 12288 octets (a base64
    # initial response is longer than a command line).
    max_auth_line: int = 12288
    # Brute force: a session closes with 421 after this many failed AUTH; an address (IPv6:
    # its /64) with this many failures in auth_window seconds gets 454 4.7.0 for AUTH, and so
    # does a user name with this many from any addresses (except from an address the user
    # logged in from): for a minute after the last failure, doubling with each further one,
    # at most an hour; the count is forgotten after an hour with no failure once its block
    # ended (server/authn.py).
    max_auth_failures_per_session: int = 3
    max_auth_failures: int = 5
    auth_window: float = 600.0
    # A stolen password must not turn the server into a spam cannon before anyone notices:
    # an authenticated user may send this many messages an hour, then 451 4.7.1.
    max_messages_per_user_per_hour: int = 1000
    # Accept gating (not an RFC rule): beyond these, new connections get 421 4.7.0 and close.
    max_connections: int = 1000
    max_connections_per_ip: int = 20
    # See BareNewline: the default refuses what RFC 5321 2.3.8 forbids.
    bare_newline: BareNewline = BareNewline.REJECT
    # RFC 3030 2: after a refused chunk the client's pipelined BDAT commands must still be
    # read (and refused). They count as one error with the refusal, up to this many; then
    # each counts, so that "BDAT 0" cannot stand in for an unlimited NOOP.
    max_refused_chunks: int = 10000
    # A balancer's PROXY header (proxy-protocol.txt 2: "a short timeout ... at least 3
    # seconds to cover a TCP retransmit"; Postfix's haproxy_read_timeout is 10 s): a peer
    # that must send one and has not sent it whole by then is closed without a greeting.
    proxy_header_timeout: float = 10.0
