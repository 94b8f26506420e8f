"""Sign-in for a team: on when `.streamlit/secrets.toml` has an `[auth]` section, off otherwise.

Off (a laptop, or a private server): everyone is the local user and nothing asks who they are. On:
Streamlit's OpenID Connect sign-in (`st.login`, `st.user`, `st.logout`) with any provider
(Google, Microsoft Entra, Okta, Keycloak, Authentik…), then `core.services.users.sign_in` for the
allow-lists and admins. A visitor who is not signed in sees only the sign-in page.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.services.users import (
    LOCAL_USER,
    Actor,
    Identity,
    NotAllowed,
    Policy,
    SignedOut,
    current,
    sign_in,
    sign_out_everywhere,
)
from ui import state
from ui.language import say, tr


def auth_section() -> dict[str, Any] | None:
    """The `[auth]` section of the secrets, if there is one (there is no secrets file on a laptop)."""
    try:
        section = st.secrets.get("auth")
    except Exception:  # noqa: BLE001 - no secrets file at all: sign-in is off
        return None
    return dict(section) if section else None


def providers(section: dict[str, Any]) -> list[str | None]:
    """The providers to offer: named `[auth.<name>]` sections, or the one configured in `[auth]` itself."""
    named = [name for name, value in section.items() if isinstance(value, dict) and "client_id" in value]
    return named or [None]


def signed_in_actor(db: Any, settings: Any) -> Actor | NotAllowed | None:
    """Who this browser session is, as stored now (with their persona): the local user without
    sign-in; with it, the signed-in person (recorded once per session), `NotAllowed` with the reason,
    or None: not signed in, or signed out (everywhere) since this browser's identity was issued."""
    if auth_section() is None:
        return current(db, LOCAL_USER)
    if not st.user.is_logged_in:
        return None
    identity = Identity(
        issuer=str(st.user.get("iss") or ""),
        subject=str(st.user.get("sub") or ""),
        email=str(st.user.get("email") or ""),
        name=str(st.user.get("name") or st.user.get("preferred_username") or ""),
        email_verified=st.user.get("email_verified"),
        issued_at=_seconds(st.user.get("iat")),
    )
    key = ("signed_in", identity.issuer, identity.subject, identity.issued_at)
    try:
        recorded = state.SIGNED_IN_AS.get()
        if recorded is None or recorded[0] != key:
            try:
                recorded = (key, sign_in(db, identity, Policy.of(settings)))
            except NotAllowed as refusal:
                recorded = (key, refusal)
            state.SIGNED_IN_AS.set(recorded)
        known = recorded[1]
        return current(db, known, identity.issued_at) if isinstance(known, Actor) else known
    except SignedOut:
        state.SIGNED_IN_AS.pop()
        return None


def _seconds(claim: object) -> float:
    """The ID token's `iat` (seconds since the epoch); 0 (before any Sign out) when it is not a number."""
    return float(claim) if isinstance(claim, int | float) and not isinstance(claim, bool) else 0.0


def sign_out(db: Any, actor: Actor) -> None:
    """Sign out everywhere: recorded first (so copies of this browser's cookie stop counting too), then
    Streamlit's own sign-out, which clears this browser's cookie and asks the provider to end its session."""
    sign_out_everywhere(db, actor)
    st.logout()


def sign_in_page() -> None:
    """All a visitor who is not signed in sees."""
    st.title(tr("home.title"))
    st.markdown(tr("auth.why"))
    for provider in providers(auth_section() or {}):
        label = tr("auth.sign_in_with", provider=provider.title()) if provider else tr("auth.sign_in")
        st.button(
            label, type="primary", icon=":material/login:", on_click=st.login, args=(provider,) if provider else ()
        )


def not_allowed_page(refusal: NotAllowed) -> None:
    st.title(tr("home.title"))
    st.error(say(refusal), icon=":material/block:")
    st.button(tr("auth.sign_out"), icon=":material/logout:", on_click=st.logout)  # never let in: nothing to record


def who_is_here(db: Any, actor: Actor) -> None:
    """The person's name and the way out, in the sidebar (only with sign-in)."""
    if auth_section() is None:
        return
    with st.sidebar:
        admin = f" · {tr('auth.admin')}" if actor.is_admin else ""
        st.caption(tr("auth.signed_in_as", name=actor.display_name or actor.email) + admin)
        st.button(tr("auth.sign_out"), icon=":material/logout:", on_click=sign_out, args=(db, actor),
                  key=state.key.SIGN_OUT)  # fmt: skip
