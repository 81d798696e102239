"""The one transition table, and the protocol package's purity (ARCHITECTURE.md, "Invariants")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from smtpkit.protocol import replies as r
from smtpkit.protocol.state import (
    AFTER_REFUSAL,
    ALWAYS_APPLIES,
    COMMAND_VERBS,
    TRANSITIONS,
    State,
    Verb,
    refusal,
)

DIALOGUE = (State.GREETED, State.READY, State.MAIL, State.RCPT, State.BDAT)
ANYTIME = (Verb.HELO, Verb.EHLO, Verb.RSET, Verb.NOOP, Verb.VRFY, Verb.EXPN, Verb.HELP)


@pytest.mark.parametrize("state", DIALOGUE)
@pytest.mark.parametrize("verb", [*ANYTIME, Verb.QUIT, Verb.STARTTLS])
def test_always_allowed_commands(state: State, verb: Verb) -> None:
    assert (state, verb) in TRANSITIONS


@pytest.mark.parametrize(
    ("state", "verb", "after"),
    [
        (State.INITIAL, Verb.GREETING, State.GREETED),
        (State.GREETED, Verb.EHLO, State.READY),
        (State.RCPT, Verb.HELO, State.READY),
        (State.READY, Verb.MAIL, State.MAIL),
        (State.MAIL, Verb.RCPT, State.RCPT),
        (State.RCPT, Verb.RCPT, State.RCPT),
        (State.RCPT, Verb.DATA, State.DATA),
        (State.DATA, Verb.END_OF_DATA, State.READY),
        (State.GREETED, Verb.RSET, State.GREETED),
        (State.RCPT, Verb.RSET, State.READY),
        (State.MAIL, Verb.NOOP, State.MAIL),
        (State.READY, Verb.QUIT, State.CLOSED),
        (State.RCPT, Verb.STARTTLS, State.GREETED),
        (State.RCPT, Verb.BDAT, State.CHUNK),
        (State.BDAT, Verb.BDAT, State.CHUNK),
        (State.CHUNK, Verb.END_OF_CHUNK, State.BDAT),
        (State.CHUNK, Verb.END_OF_LAST_CHUNK, State.READY),
        (State.BDAT, Verb.RSET, State.READY),
        (State.BDAT, Verb.EHLO, State.READY),
    ],
)
def test_transitions(state: State, verb: Verb, after: State) -> None:
    assert TRANSITIONS[state, verb] is after


@pytest.mark.parametrize(
    ("state", "verb", "reply"),
    [
        (State.GREETED, Verb.MAIL, r.NEED_HELO),
        (State.GREETED, Verb.RCPT, r.NEED_HELO),
        (State.GREETED, Verb.DATA, r.NEED_HELO),
        (State.READY, Verb.RCPT, r.BAD_SEQUENCE),
        (State.READY, Verb.DATA, r.BAD_SEQUENCE),
        (State.MAIL, Verb.MAIL, r.SENDER_ALREADY),
        (State.RCPT, Verb.MAIL, r.SENDER_ALREADY),
        (State.MAIL, Verb.DATA, r.NO_VALID_RECIPIENTS),
        (State.GREETED, Verb.BDAT, r.NEED_HELO),
        (State.READY, Verb.BDAT, r.BAD_SEQUENCE),
        (State.MAIL, Verb.BDAT, r.NO_VALID_RECIPIENTS),
        (State.BDAT, Verb.DATA, r.DATA_AFTER_BDAT),
        (State.BDAT, Verb.MAIL, r.SENDER_ALREADY),
        (State.BDAT, Verb.RCPT, r.BAD_SEQUENCE),
        (State.BDAT, Verb.AUTH, r.AUTH_IN_TRANSACTION),
    ],
)
def test_misses_and_their_refusal(state: State, verb: Verb, reply: r.Reply) -> None:
    assert (state, verb) not in TRANSITIONS
    assert refusal(state, verb) == reply


PSEUDO = {
    Verb.GREETING,
    Verb.END_OF_DATA,
    Verb.AUTH_RESPONSE,
    Verb.END_OF_CHUNK,
    Verb.END_OF_LAST_CHUNK,
}


def test_no_command_is_read_outside_the_dialogue() -> None:
    for state, verb in TRANSITIONS:
        if verb in PSEUDO:
            continue
        assert state in DIALOGUE


def test_pseudo_steps_that_always_apply() -> None:
    # A refused message ends its transaction, however it was sent; a refused chunk that is
    # not the last one too, so that no later chunk joins a message that failed.
    assert {Verb.END_OF_DATA, Verb.END_OF_LAST_CHUNK} <= ALWAYS_APPLIES
    assert Verb.END_OF_CHUNK not in ALWAYS_APPLIES
    assert AFTER_REFUSAL == {(State.CHUNK, Verb.END_OF_CHUNK): State.READY}


def test_command_verbs_are_the_typed_ones() -> None:
    pseudo = PSEUDO
    assert set(COMMAND_VERBS.values()) == set(Verb) - pseudo
    assert all(key.isupper() for key in COMMAND_VERBS)


FORBIDDEN = {"socket", "selectors", "ssl", "os", "time", "asyncio", "threading", "io"}


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[2] / "smtpkit" / "protocol").glob("*.py")),
    ids=lambda p: p.name,
)
def test_protocol_package_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Name) and node.id == "open":
            raise AssertionError(f"{path.name} calls open()")
    assert not imported & FORBIDDEN
