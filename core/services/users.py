"""Who is acting, and who may come in.

Every service call carries an `Actor`. Without sign-in (a laptop, or a server with no `[auth]` in its
secrets) it is `LOCAL_USER`, the one user every row belongs to. With sign-in, `sign_in` turns what
the identity provider says into an actor, after the allow-lists (`REFSHEET_ALLOWED_EMAILS`,
`REFSHEET_ALLOWED_DOMAINS`) and with admin rights for `REFSHEET_ADMINS`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.base.errors import NotFound, Refused, UserError
from core.base.i18n import UI_LANGUAGES
from core.base.settings import Settings
from core.base.text import clean_text, one_line
from core.services import access
from core.services.access import LOCAL_USER as LOCAL_USER  # who acts: defined with the rule they are judged by
from core.services.access import Actor as Actor
from core.services.access import Persona
from storage import users
from storage.tables import LOCAL_USER_ID, MAX_LINE, MAX_PERSONA_DESCRIPTION, MAX_PERSONA_NAME, User


def email_address(text: str) -> str:
    """An address as the lists and the provider's claims are compared: trimmed and lower-cased, here
    only, and only when it has the shape `local@domain` (one `@`, something on each side, no spaces);
    anything else is no address at all (""). `lower()`, not `casefold()`: casefolding maps "ß" to "ss"
    and would make two different mailboxes one."""
    address = text.strip().lower() if isinstance(text, str) else ""
    local, at, domain = address.partition("@")
    if not (at and local and domain) or "@" in domain or any(ch.isspace() for ch in address):
        return ""
    return address


@dataclass(frozen=True)
class Identity:
    """What the identity provider says about who signed in (OpenID Connect claims).

    `email_verified` is the claim exactly as it came (it is optional in OpenID Connect: Microsoft
    Entra never sends it; some providers send the string "false"); `issued_at` is the ID token's
    `iat` (the provider's clock, seconds since the epoch; 0 when it sent none)."""

    issuer: str
    subject: str
    email: str = ""
    name: str = ""
    email_verified: object = None
    issued_at: float = 0.0

    def verified_email(self, trusted_issuers: frozenset[str] = frozenset()) -> str:
        """The address, if it counts: the provider said `email_verified: true` (a JSON boolean; the
        string "true" is not one). For an issuer the operator lists as trusted (one that never sends
        the claim), a missing claim or the string "true" counts too; an explicit false never does."""
        address = email_address(self.email)
        claim = self.email_verified
        if claim is True:
            return address
        trusted = self.issuer.rstrip("/") in trusted_issuers
        if trusted and (claim is None or (isinstance(claim, str) and claim.strip().lower() == "true")):
            return address
        return ""


class NotAllowed(UserError):
    """Signed in, but not someone this server lets in."""

    namespace = "auth"


@dataclass(frozen=True)
class Policy:
    """Who may come in and who administers, from the settings. Every comparison is of verified
    addresses (`Identity.verified_email`), normalised by `email_address`."""

    allowed_emails: frozenset[str] = frozenset()
    allowed_domains: frozenset[str] = frozenset()
    admins: frozenset[str] = frozenset()
    trusted_issuers: frozenset[str] = frozenset()  # providers whose email needs no `email_verified`

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        def parts(text: str) -> list[str]:
            return [part.strip() for part in text.split(",") if part.strip()]

        def addresses(text: str) -> frozenset[str]:
            return frozenset(filter(None, map(email_address, parts(text))))

        domains = frozenset(part.lower().lstrip("@") for part in parts(settings.allowed_domains))
        issuers = frozenset(part.rstrip("/") for part in parts(settings.trusted_email_issuers))
        return cls(addresses(settings.allowed_emails), domains, addresses(settings.admins), issuers)

    def check(self, identity: Identity) -> None:
        """Raise `NotAllowed`, saying why, unless the allow-lists admit this identity. A list trusts
        only verified addresses; a domain matches `local@domain` exactly (no subdomain, no suffix)."""
        if not (self.allowed_emails or self.allowed_domains):
            return
        email = identity.verified_email(self.trusted_issuers)
        if not email:
            raise NotAllowed("unverified", email=identity.email.strip()[:200] or "—")
        if email in self.allowed_emails or email.partition("@")[2] in self.allowed_domains:
            return
        raise NotAllowed("not_allowed", email=email)

    def is_admin(self, identity: Identity) -> bool:
        """Admin rights go to a verified address on the admins list, never to a claimed one."""
        email = identity.verified_email(self.trusted_issuers)
        return bool(email) and email in self.admins


class SignedOut(UserError):
    """This identity was issued before the person chose Sign out (a copied cookie, another browser)."""

    namespace = "auth"

    def __init__(self) -> None:
        super().__init__("signed_out")


def sign_in(db: Engine, identity: Identity, policy: Policy) -> Actor:
    """The actor for someone the provider vouches for: recorded on first sign-in, seen again after.
    Raises `NotAllowed` (the allow-lists) or `SignedOut` (an identity from before their last Sign out)."""
    policy.check(identity)
    email = identity.verified_email(policy.trusted_issuers)  # an unverified address is not shown as theirs
    name = one_line(identity.name)[:MAX_LINE]
    with access.writing(db) as session:
        user = users.signed_in(session, identity.issuer, identity.subject, email, name)
        _check_not_signed_out(user, identity.issued_at)
        users.saw_identity(session, user, int(identity.issued_at))
        return Actor(user.id, user.name or user.email, user.email, policy.is_admin(identity))


def current(db: Engine, actor: Actor, issued_at: float = 0.0) -> Actor:
    """The actor as stored now, with their saved persona (one row read by its key: cheap enough for
    every page run). Raises `SignedOut` once they have signed out after `issued_at`, so a session
    that is already open ends at its next run, not only new ones."""
    with Session(db) as session:
        user = users.get_user(session, actor.id)
    if user is None:
        return actor
    if actor.id != LOCAL_USER_ID:
        _check_not_signed_out(user, issued_at)
    return replace(actor, persona=Persona(user.persona_name, user.persona_description), ui_language=user.ui_language)


def sign_out_everywhere(db: Engine, actor: Actor) -> None:
    """Record Sign out: every identity issued until now (every browser's cookie, copies included) stops
    counting; the provider's next sign-in issues a newer one. (A provider that sends no `iat`, which
    OpenID Connect requires, cannot be told apart this way: nothing is recorded for it.)"""
    if actor.id == LOCAL_USER_ID:
        return
    with access.writing(db) as session:
        users.signed_out(session, actor.id)


def _check_not_signed_out(user: User, issued_at: float) -> None:
    """Only the provider's clock is compared: an identity issued no later than the newest one this
    person had signed in with when they chose Sign out is one from before it."""
    if user.signed_out_iat is not None and issued_at <= user.signed_out_iat:
        raise SignedOut()


def save_persona(db: Engine, actor: Actor, name: str, description: str) -> Actor:
    """Save who the user is to the characters (per person with sign-in; the one local user without);
    returns the actor with it. Too long a name or description is refused, saying the limit."""
    name, description = one_line(name), clean_text(description).strip()
    if len(name) > MAX_PERSONA_NAME:
        raise Refused("persona_name_too_long", limit=MAX_PERSONA_NAME)
    if len(description) > MAX_PERSONA_DESCRIPTION:
        raise Refused("persona_description_too_long", limit=MAX_PERSONA_DESCRIPTION)
    with access.writing(db) as session:
        if not users.set_persona(session, actor.id, name, description):
            raise NotFound("user", id=actor.id)
    return replace(actor, persona=Persona(name, description))


def save_language(db: Engine, actor: Actor, language: str) -> Actor:
    """Keep the interface language the actor chose (one of `core.base.i18n.UI_LANGUAGES`), so it
    follows them to their next visit and, signed in, to every browser."""
    if language not in UI_LANGUAGES:
        raise Refused("bad_field", field="ui_language")
    with access.writing(db) as session:
        users.set_language(session, actor.id, language)
    return replace(actor, ui_language=language)


def people(db: Engine, actor: Actor) -> list[User]:
    """Everyone who has signed in (admins only: to hand the local library over)."""
    _require_admin(actor)
    with Session(db) as session:
        return users.list_users(session)


def local_library(db: Engine, actor: Actor) -> tuple[int, int]:
    """How many characters and conversations still belong to the local user (made before sign-in)."""
    _require_admin(actor)
    with Session(db) as session:
        return users.owned_counts(session, LOCAL_USER_ID)


def hand_over_local_library(db: Engine, actor: Actor, to_user_id: int) -> tuple[int, int]:
    """Give everything made before sign-in was turned on to one person; returns how many of each."""
    _require_admin(actor)
    with access.writing(db) as session:
        if to_user_id == LOCAL_USER_ID or users.get_user(session, to_user_id) is None:
            raise NotFound("user", id=to_user_id)
        return users.hand_over(session, LOCAL_USER_ID, to_user_id)


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Refused("admins_only")
