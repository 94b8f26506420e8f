"""Who counts as whom: only an address the provider says is verified (a JSON `true`) passes an
allow-list or makes an admin; a provider that never sends the claim is trusted only when the
operator names it; domains match `local@domain` exactly; addresses are compared trimmed and lower-cased.
Signing out ends every session of that identity, copies of the cookie included."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.base.settings import Settings
from core.services import users
from core.services.users import Identity, NotAllowed, Policy, SignedOut, email_address

ENTRA = "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
TEAM = Policy(frozenset({"ann@partner.test"}), frozenset({"example.test"}), frozenset({"boss@example.test"}))

CLAIMS = {"missing": ..., "None": None, '"false"': "false", '"False"': "False", "0": 0, "1": 1, '"true"': "true",
          '"TRUE"': "TRUE", "[]": [], "{}": {}, "True": True}  # fmt: skip


def who(email: str, claim: object = True, issuer: str = "https://id.example", iat: float = 0.0) -> Identity:
    if claim is ...:
        return Identity(issuer, "sub", email, "Name", issued_at=iat)
    return Identity(issuer, "sub", email, "Name", claim, iat)


@pytest.mark.parametrize("claim", list(CLAIMS), ids=list(CLAIMS))
def test_only_a_json_true_is_a_verified_address(claim: str) -> None:
    identity = who("boss@example.test", CLAIMS[claim])
    verified = claim == "True"
    assert TEAM.is_admin(identity) is verified  # the escalation: a claimed admin address without proof
    if verified:
        TEAM.check(identity)
    else:
        with pytest.raises(NotAllowed, match="no verified email"):
            TEAM.check(identity)


@pytest.mark.parametrize("claim", list(CLAIMS), ids=list(CLAIMS))
def test_an_issuer_the_operator_trusts_needs_no_claim_but_a_false_one_still_refuses(claim: str) -> None:
    policy = Policy.of(Settings(allowed_domains="example.test", admins="boss@example.test",
                                trusted_email_issuers=f" {ENTRA}/ , https://other.example"))  # fmt: skip
    identity = who("boss@example.test", CLAIMS[claim], issuer=ENTRA)
    counts = claim in ("missing", "None", '"true"', '"TRUE"', "True")
    assert policy.is_admin(identity) is counts
    # The same claim from an issuer nobody named is judged strictly.
    assert policy.is_admin(who("boss@example.test", CLAIMS[claim], issuer="https://elsewhere.example")) is (
        claim == "True"
    )


@pytest.mark.parametrize(
    ("typed", "address"),
    [("  Boss@Example.TEST ", "boss@example.test"), ("boss@example.test", "boss@example.test"),
     ("example.test", ""), ("@example.test", ""), ("boss@", ""), ("a@b@example.test", ""), ("bo ss@example.test", ""),
     ("", ""), ("STRASSE@example.test", "strasse@example.test"), ("straße@example.test", "straße@example.test")],
)  # fmt: skip
def test_addresses_are_trimmed_and_lower_cased_once_and_must_be_local_at_domain(typed: str, address: str) -> None:
    assert email_address(typed) == address


def test_a_domain_matches_only_local_at_that_domain() -> None:
    for refused in ("example.test", "eve@evil-example.test", "eve@example.test.evil", "eve@sub.example.test",
                    "example.test@evil.test"):  # fmt: skip
        with pytest.raises(NotAllowed):
            TEAM.check(who(refused))
    TEAM.check(who("  Someone@EXAMPLE.test "))
    TEAM.check(who("ann@partner.test"))
    assert TEAM.is_admin(who(" BOSS@example.test"))
    assert not TEAM.is_admin(who("boss@example.test.evil"))


def test_the_lists_are_read_like_the_claims() -> None:
    policy = Policy.of(Settings(allowed_emails=" Ann@Partner.test, not-an-address ,", allowed_domains="@Example.Test",
                                admins="BOSS@example.test"))  # fmt: skip
    assert policy.allowed_emails == {"ann@partner.test"}
    assert policy.allowed_domains == {"example.test"} and policy.admins == {"boss@example.test"}


@settings(max_examples=200, derandomize=True, deadline=None)
@given(claim=st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
       | st.lists(st.booleans(), max_size=2), email=st.text(max_size=40))  # fmt: skip
def test_no_claim_but_true_ever_makes_an_admin_or_lets_in(claim: object, email: str) -> None:
    policy = Policy(frozenset(), frozenset({"example.test"}), frozenset({email_address(email) or "x@example.test"}))
    identity = who(email, claim)
    if claim is not True:
        assert not policy.is_admin(identity)
        with pytest.raises(NotAllowed):
            policy.check(identity)


@pytest.mark.parametrize(
    "provider_clock", [-180, -3, 0, 120], ids=["3 min behind", "3 s behind", "same", "2 min ahead"]
)
def test_signing_out_ends_every_identity_issued_before_it(engine, provider_clock: int) -> None:
    """Only the provider's clock is compared (the ID token's `iat`), so a provider whose clock differs
    from the app's neither keeps an old cookie alive nor locks a fresh sign-in out."""
    now = int(time.time()) + provider_clock

    def identity(iat: float) -> Identity:
        return Identity("https://id.example", "ann", "ann@example.test", "Ann", True, iat)

    ann = users.sign_in(engine, identity(now - 60), Policy())  # a browser from a minute ago
    users.sign_in(engine, identity(now), Policy())  # and another, just now
    assert users.current(engine, ann, now - 60).id == ann.id
    users.sign_out_everywhere(engine, ann)
    for old in (now - 60, now):
        with pytest.raises(SignedOut):  # an open session ends at its next run
            users.current(engine, ann, old)
        with pytest.raises(SignedOut):  # and a copied cookie does not sign in again
            users.sign_in(engine, identity(old), Policy())
    again = users.sign_in(engine, identity(now + 1), Policy())  # the provider's next sign-in
    assert again.id == ann.id and users.current(engine, again, now + 1).id == ann.id


def test_a_provider_without_iat_is_not_locked_out_by_a_sign_out(engine) -> None:
    ghost = users.sign_in(engine, Identity("https://id.example", "g", "g@example.test", "G", True), Policy())
    users.sign_out_everywhere(engine, ghost)
    assert (
        users.sign_in(engine, Identity("https://id.example", "g", "g@example.test", "G", True), Policy()).id == ghost.id
    )


def test_an_unverified_address_is_not_recorded_as_theirs(engine) -> None:
    """Without an allow-list anyone the provider signs in may enter, but a claimed address that is not
    verified is not shown beside their name (an admin could hand the library to an impostor)."""
    claimed = users.sign_in(engine, Identity("https://id.example", "x", "carol@example.test", "Carol?", None), Policy())
    assert claimed.email == "" and not claimed.is_admin
    assert [(p.name, p.email) for p in users.people(engine, users.LOCAL_USER)] == [("Carol?", "")]


def test_a_name_from_the_provider_is_kept_to_one_line(engine) -> None:
    named = users.sign_in(
        engine, Identity("https://id.example", "n", "", "Bob\n\n# Notice from your admins", True), Policy()
    )
    assert named.display_name == "Bob # Notice from your admins"
