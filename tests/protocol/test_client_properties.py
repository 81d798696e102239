"""Hypothesis: any session with any server behaviour, however its bytes are cut into reads,
gives the same events and the same bytes out; and the engine's verdict for each recipient is
what the server said (checked against a model read from the server's own log)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpkit.protocol.client_events import Closed, TransactionDone
from tests.protocol.test_client import CLOSE, Envelope, FakeServer, Outcome, Plan, play

POOL = [f"r{i}@mx.test" for i in range(5)]
GREETING = [b"220 mx.test ESMTP\r\n"] * 6 + [
    b"220-mx.test\r\n220 ESMTP\r\n",
    b"554 5.7.1 No\r\n",
    b"421 4.3.2 Busy\r\n",
]
MAIL = [b"250 2.1.0 OK\r\n"] * 6 + [b"552 5.3.4 Too big\r\n", b"451 4.3.0 Later\r\n", CLOSE]
RCPT = [b"250 2.1.5 OK\r\n"] * 4 + [
    b"251 2.1.5 Will forward\r\n",
    b"450 4.2.1 Busy\r\n",
    b"452 4.5.3 Too many\r\n",
    b"550-5.1.1 No such\r\n550 5.1.1 user\r\n",
    b"421 4.3.2 Shutting down\r\n",
]
DATA = [b"354 Go ahead\r\n"] * 6 + [b"554 5.5.1 No valid recipients\r\n", b"451 4.3.0 Later\r\n"]
DOT = [b"250 2.0.0 Queued\r\n"] * 5 + [
    b"554 5.7.1 Spam\r\n",
    b"452 4.3.1 Disk full\r\n",
    b"421 4.3.2 Bye\r\n",
    CLOSE,
]
BODY = st.lists(
    st.sampled_from(
        [b"a", b"Subject: x", b".", b"..", b"\r\n", b"\n", b"\r\n.", b"\xe9", b"b" * 9]
    ),
    max_size=20,
).map(b"".join)


@st.composite
def sessions(draw: st.DrawFn) -> Callable[[], tuple[FakeServer, Plan]]:
    """A server's behaviour and a plan, as a factory (both are used up by a run)."""
    lmtp = draw(st.booleans())
    keywords = [b"PIPELINING"] if draw(st.booleans()) else []
    keywords += [b"8BITMIME", b"SIZE 100000"]
    ehlo = b"250-mx.test\r\n" + b"".join(b"250-" + k + b"\r\n" for k in keywords[:-1])
    ehlo += b"250 " + keywords[-1] + b"\r\n"
    refuse_ehlo = draw(st.sampled_from([False, False, False, True]))
    hello = b"502 5.5.2 No EHLO\r\n" if refuse_ehlo else ehlo
    count = draw(st.integers(min_value=1, max_value=3))
    server_rules = {
        "MAIL": [draw(st.sampled_from(MAIL)) for _ in range(count)],
        "DATA": [draw(st.sampled_from(DATA)) for _ in range(count)],
        ".": [draw(st.sampled_from(DOT)) for _ in range(count + 1)],
        "LHLO" if lmtp else "EHLO": [hello],
    }
    rcpt = {address: draw(st.sampled_from(RCPT)) for address in POOL}
    final = {address: draw(st.sampled_from(DOT)) for address in POOL}
    greeting = draw(st.sampled_from(GREETING))
    envelopes = []
    for _ in range(count):
        recipients = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True))
        body = draw(BODY)
        cuts = sorted(set(draw(st.lists(st.integers(0, max(0, len(body) - 1)), max_size=4))))
        edges = [0, *cuts, len(body)]
        chunks = tuple(body[a:b] for a, b in zip(edges, edges[1:], strict=False))
        size = draw(st.sampled_from([None, len(body)]))
        envelopes.append(Envelope("s@client.test", tuple(recipients), chunks, size=size))

    def make() -> tuple[FakeServer, Plan]:
        server = FakeServer(
            {k: list(v) for k, v in server_rules.items()},
            rcpt=dict(rcpt),
            final=dict(final),
            lmtp=lmtp,
            greeting=greeting,
        )
        return server, Plan(list(envelopes), lmtp=lmtp)

    return make


def model(server: FakeServer, plan: Plan) -> list[list[tuple[str, int | None]]]:
    """What each transaction's recipients must get, from the server's log alone: MAIL's
    refusal, else their RCPT's refusal, else DATA's refusal, else the final reply; the 421
    for whatever it cut short (RFC 5321 3.8), None when the server just closed."""
    last = server.log[-1][2] if server.log else None
    closing = 421 if server.closed and last == 421 else None
    # The log cut into transactions: each starts with the reply to MAIL.
    logs: list[list[tuple[str, str, int | None]]] = []
    for entry in server.log:
        if entry[0] == "MAIL":
            logs.append([])
        if logs:
            logs[-1].append(entry)
    out = []
    for log, env in zip(logs, plan.envelopes_sent, strict=True):
        mail = log[0][2]
        rcpt = {a: c for verb, a, c in log if verb == "RCPT"}
        data = next((c for verb, _, c in log if verb == "DATA"), closing)
        finals = [(a, c) for verb, a, c in log if verb == "."]
        fates: list[tuple[str, int | None]] = []
        for address in env.recipients:
            code = rcpt.get(address, closing)
            if mail is None or mail >= 300:
                fates.append((address, mail))
            elif code is None or code >= 300:
                fates.append((address, code))
            elif data != 354:
                fates.append((address, data))
            elif plan.lmtp:
                fates.append((address, dict(finals).get(address, closing)))
            else:
                fates.append((address, finals[0][1] if finals else closing))
        out.append(fates)
    return out


def check(out: Outcome, server: FakeServer, plan: Plan) -> None:
    closed = [e for e in out.events if isinstance(e, Closed)]
    assert len(closed) == 1 and out.events[-1] is closed[0]
    dones = [e for e in out.events if isinstance(e, TransactionDone)]
    assert len(dones) == len(plan.envelopes_sent)
    sent = b"".join(out.writes)
    assert sent.count(b"\r") == sent.count(b"\n") == sent.count(b"\r\n")
    for done, env in zip(dones, plan.envelopes_sent, strict=True):
        assert [a for a, _ in done.results] == list(env.recipients)
    got = [[(a, r.code if r else None) for a, r in d.results] for d in dones]
    assert got == model(server, plan)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=sessions(), cuts=st.lists(st.integers(min_value=1, max_value=1500), max_size=12))
def test_any_session_any_split(
    session: Callable[[], tuple[FakeServer, Plan]], cuts: list[int]
) -> None:
    server, plan = session()
    whole = play(server, plan)
    check(whole, server, plan)
    pieces = play(*session(), cuts=cuts)
    assert pieces.comparable() == whole.comparable()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=sessions())
def test_any_session_byte_by_byte(session: Callable[[], tuple[FakeServer, Plan]]) -> None:
    whole = play(*session())
    assert play(*session(), bytewise=True).comparable() == whole.comparable()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=sessions())
def test_delivered_messages_arrive_as_given(
    session: Callable[[], tuple[FakeServer, Plan]],
) -> None:
    server, plan = session()
    out = play(server, plan)
    bodies = []
    for env in plan.envelopes_sent:
        body = b"".join(env.body).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        bodies.append(body if body.endswith(b"\r\n") or not body else body + b"\r\n")
    # Every message the server read is one of the bodies, unstuffed and with CRLF ends (the
    # lone dot of RFC 2920 3.1 is an empty one).
    for got in server.messages():
        assert got in bodies or got == b""
    assert len(server.wire_messages) <= len(plan.envelopes_sent)
    del out
