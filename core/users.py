"""Who is acting, and who may come in.

Every service call carries an `Actor`. Without sign-in (a laptop, or a server with no `[auth]` in its
secrets) it is `LOCAL_USER`, the one user every row belongs to. With sign-in, `sign_in` turns what
the identity provider says into an actor, after the allow-lists (`REFSHEET_ALLOWED_EMAILS`,
`REFSHEET_ALLOWED_DOMAINS`) and with admin rights for `REFSHEET_ADMINS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core import access
from core.errors import NotFound, Refused, UserError
from core.settings import Settings
from core.text import clean_text
from storage import users
from storage.tables import LOCAL_USER_ID, User

MAX_PERSONA_NAME = 100  # characters
MAX_PERSONA_DESCRIPTION = 2_000  # characters: a paragraph, read by every character in every reply


@dataclass(frozen=True)
class Persona:
    """Who the user is to the characters: the name they call them by, and what they know of them."""

    name: str = ""
    description: str = ""


@dataclass(frozen=True)
class Actor:
    """The person on whose behalf a service runs. `id` is what rows record as their owner."""

    id: int
    display_name: str = ""  # the provider's name for them
    email: str = ""
    is_admin: bool = False
    persona: Persona = field(default_factory=Persona)

    @property
    def user_name(self) -> str:
        """Who the characters talk to ({{user}} in cards and greetings): the persona's name, else the
        provider's, else "you"."""
        return self.persona.name.strip() or self.display_name.strip() or "you"


LOCAL_USER = Actor(id=LOCAL_USER_ID, is_admin=True)  # the one user of an install without sign-in


@dataclass(frozen=True)
class Identity:
    """What the identity provider says about who signed in (OpenID Connect claims)."""

    issuer: str
    subject: str
    email: str = ""
    name: str = ""
    email_verified: bool | None = None


class NotAllowed(UserError):
    """Signed in, but not someone this server lets in."""

    namespace = "auth"


@dataclass(frozen=True)
class Policy:
    """Who may come in and who administers, from the settings (email addresses, case-insensitive)."""

    allowed_emails: frozenset[str] = frozenset()
    allowed_domains: frozenset[str] = frozenset()
    admins: frozenset[str] = frozenset()

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        def listed(text: str) -> frozenset[str]:
            return frozenset(part.strip().lower().lstrip("@") for part in text.split(",") if part.strip())

        return cls(listed(settings.allowed_emails), listed(settings.allowed_domains), listed(settings.admins))

    def check(self, identity: Identity) -> None:
        """Raise `NotAllowed`, saying why, unless the allow-lists admit this identity. A list naming
        emails trusts only addresses the provider has verified."""
        email = identity.email.strip().lower()
        if not (self.allowed_emails or self.allowed_domains):
            return
        if not email or identity.email_verified is False:
            raise NotAllowed("unverified", email=email or "—")
        if email in self.allowed_emails or email.rsplit("@", 1)[-1] in self.allowed_domains:
            return
        raise NotAllowed("not_allowed", email=email)

    def is_admin(self, identity: Identity) -> bool:
        email = identity.email.strip().lower()
        return bool(email) and identity.email_verified is not False and email in self.admins


def sign_in(db: Engine, identity: Identity, policy: Policy) -> Actor:
    """The actor for someone the provider vouches for: recorded on first sign-in, seen again after."""
    policy.check(identity)
    with access.writing(db) as session:
        user = users.signed_in(session, identity.issuer, identity.subject, identity.email, identity.name)
        return Actor(user.id, user.name or user.email, user.email, policy.is_admin(identity))


def with_persona(db: Engine, actor: Actor) -> Actor:
    """The actor with their saved persona (one row read by its key: cheap enough for every page run)."""
    with Session(db) as session:
        user = users.get_user(session, actor.id)
    if user is None:
        return actor
    return replace(actor, persona=Persona(user.persona_name, user.persona_description))


def save_persona(db: Engine, actor: Actor, name: str, description: str) -> Actor:
    """Save who the user is to the characters (per person with sign-in; the one local user without);
    returns the actor with it. Too long a name or description is refused, saying the limit."""
    name, description = clean_text(name).strip(), clean_text(description).strip()
    if len(name) > MAX_PERSONA_NAME:
        raise Refused("persona_name_too_long", limit=MAX_PERSONA_NAME)
    if len(description) > MAX_PERSONA_DESCRIPTION:
        raise Refused("persona_description_too_long", limit=MAX_PERSONA_DESCRIPTION)
    with access.writing(db) as session:
        if not users.set_persona(session, actor.id, name, description):
            raise NotFound("user", id=actor.id)
    return replace(actor, persona=Persona(name, description))


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
