"""Router: which mailboxes a recipient reaches, subaddresses (RFC 5233) included."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpkit.config import parse_config
from smtpkit.delivery.router import Router
from smtpkit.delivery.targets import Mailbox
from smtpkit.errors import ConfigError
from smtpkit.users import UserStore

DOMAINS = ("example.org", "example.net")
ALIASES = {
    "postmaster@example.org": ("alice@example.org",),
    "team@example.org": ("alice@example.org", "bob@example.org"),
    "alice+alias@example.org": ("bob@example.org",),
    "gone@example.org": ("nobody@example.org",),
}


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    (tmp_path / "users").mkdir()
    users = UserStore(tmp_path / "users", DOMAINS)
    for address in ("alice@example.org", "bob@example.org", "carol@example.org"):
        users.add(address)
    users.add("carol+team@example.org")  # a real user whose name holds the delimiter
    return users


def router(store: UserStore, delimiters: str = "+") -> Router:
    return Router(store, ALIASES, DOMAINS, delimiters=delimiters)


def boxes(store: UserStore, *addresses: str) -> tuple[Mailbox, ...]:
    return tuple(Mailbox(store.mailbox(a)) for a in addresses)


@pytest.mark.parametrize(
    ("recipient", "reaches"),
    [
        ("alice@example.org", ("alice@example.org",)),
        ("alice+lists@example.org", ("alice@example.org",)),
        ("Alice+Lists@EXAMPLE.org", ("alice@example.org",)),
        ("alice+@example.org", ("alice@example.org",)),
        ("alice+a+b@example.org", ("alice@example.org",)),  # cut at the first delimiter
        ("alice+a.b@example.org", ("alice@example.org",)),
        # An exact user or alias wins over the subaddress rule.
        ("carol+team@example.org", ("carol+team@example.org",)),
        ("carol+other@example.org", ("carol@example.org",)),
        ("alice+alias@example.org", ("bob@example.org",)),
        # Aliases have subaddresses too.
        ("postmaster+bounces@example.org", ("alice@example.org",)),
        ("team+x@example.org", ("alice@example.org", "bob@example.org")),
        ("Postmaster", ("alice@example.org",)),
    ],
)
def test_a_subaddress_reaches_its_user_unless_the_exact_address_exists(
    store: UserStore, recipient: str, reaches: tuple[str, ...]
) -> None:
    assert router(store).resolve(recipient) == boxes(store, *reaches)


@pytest.mark.parametrize(
    "recipient",
    [
        "nobody+tag@example.org",  # unknown base: 550 5.1.1 as for any unknown user
        "+alice@example.org",  # no local part before the delimiter
        "alice-lists@example.org",  # not a delimiter here
        "alice+lists@example.com",  # not a local domain
        "alice+lists@example.net",  # alice is a user of example.org only
        "gone+x@example.org",  # an alias without a mailbox is no one's
        "postmaster+x",  # bare postmaster has no subaddress
        "alice+x@@example.org",
    ],
)
def test_a_subaddress_of_no_one_reaches_nothing(store: UserStore, recipient: str) -> None:
    assert router(store).resolve(recipient) == ()


def test_delimiters_are_a_set_and_can_be_turned_off(store: UserStore) -> None:
    several = router(store, "+-")
    assert several.resolve("alice-lists@example.org") == boxes(store, "alice@example.org")
    assert several.resolve("alice+x-y@example.org") == boxes(store, "alice@example.org")
    assert several.resolve("-alice@example.org") == ()
    off = router(store, "")
    assert off.resolve("alice+lists@example.org") == ()
    assert off.resolve("carol+team@example.org") == boxes(store, "carol+team@example.org")
    assert off.base_address("alice+lists@example.org") is None


def test_base_address(store: UserStore) -> None:
    r = router(store)
    assert r.base_address("alice+lists@example.org") == "alice@example.org"
    assert r.base_address("ALICE+x+y@Example.org") == "alice@example.org"
    assert r.base_address("alice@example.org") is None
    assert r.base_address("alice+alias@example.org") is None  # an alias is exact
    assert r.base_address("nobody@elsewhere.example") is None


def test_a_user_added_while_running_takes_its_subaddresses_from_the_base(
    store: UserStore,
) -> None:
    r = router(store)
    assert r.resolve("dave+x@example.org") == ()
    store.add("dave@example.org")
    assert r.resolve("dave+x@example.org") == boxes(store, "dave@example.org")
    store.add("dave+x@example.org")
    assert r.resolve("dave+x@example.org") == boxes(store, "dave+x@example.org")


def _config(tmp_path: Path, server: dict[str, object]) -> object:
    data = {"server": {"domains": ["example.org"], **server}}
    return parse_config(data, tmp_path / "smtpkit.toml")


def test_recipient_delimiter_in_the_config(tmp_path: Path) -> None:
    from smtpkit.config import Config

    def delimiter(**server: object) -> str:
        config = _config(tmp_path, server)
        assert isinstance(config, Config)
        return config.server.recipient_delimiter

    assert delimiter() == "+"
    assert delimiter(recipient_delimiter="") == ""
    assert delimiter(recipient_delimiter="+-") == "+-"
    for wrong, says in [
        ("@", "'@' cannot separate a subaddress"),
        (".", "'.' cannot separate a subaddress"),
        ("a", "'a' cannot separate a subaddress"),
        ("/", "'/' cannot separate a subaddress"),
        ("++", "names a character twice"),
        (1, "must be a string"),
    ]:
        with pytest.raises(ConfigError, match="recipient_delimiter") as caught:
            _config(tmp_path, {"recipient_delimiter": wrong})
        assert says in str(caught.value)


def test_utf8_addresses_route_only_when_the_transaction_said_smtputf8(store: UserStore) -> None:
    """The ASCII check comes before the cache: a UTF-8 address remembered from an SMTPUTF8
    transaction is still refused outside one."""
    store.add("m\u00fcller@example.org")
    r = router(store)
    nfd = "Mu\u0308ller+news@example.org"
    assert r.resolve(nfd, utf8=True) == boxes(store, "m\u00fcller@example.org")
    assert r.resolve("m\u00fcller@example.org", utf8=True) == r.resolve(nfd, utf8=True)
    assert r.resolve(nfd) == ()
    assert r.resolve("m\u00fcller@example.org") == ()
    assert r.resolve("\u212aarol@example.org", utf8=True) == ()  # KELVIN SIGN, not "k"
    assert r.is_local_domain("a@b\u00fccher.example", utf8=True) is False
    assert r.is_local_domain("m\u00fcller@EXAMPLE.org", utf8=True)
    assert r.sends_as("m\u00fcller@example.org", nfd.replace("+news", ""), utf8=True)
    assert not r.sends_as("m\u00fcller@example.org", "m\u00fcller@example.org")
