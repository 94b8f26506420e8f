"""People: found by their identity provider's issuer and subject, created the first time they sign in."""

from __future__ import annotations

from sqlmodel import Session, col, func, select, update

from storage.tables import LOCAL_USER_ID, Character, Conversation, User, utcnow


def get_user(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def signed_in(session: Session, issuer: str, subject: str, email: str, name: str) -> User:
    """The user for this identity, created on first sign-in; email and name follow the provider."""
    user = session.exec(select(User).where(User.issuer == issuer, User.subject == subject)).first()
    if user is None:
        user = User(issuer=issuer, subject=subject, email=email, name=name)
    else:
        user.email, user.name, user.last_seen = email, name, utcnow()
    session.add(user)
    session.flush()
    return user


def saw_identity(session: Session, user: User, issued_at: int) -> None:
    """Remember the newest identity (its `iat`) the person has signed in with."""
    if issued_at > (user.latest_iat or 0):
        user.latest_iat = issued_at
        session.add(user)
        session.flush()


def signed_out(session: Session, user_id: int) -> None:
    """Record Sign out: every identity issued up to the newest one seen no longer counts."""
    user = session.get(User, user_id)
    if user is not None and user.latest_iat:
        user.signed_out_iat = user.latest_iat
        session.add(user)
        session.flush()


def set_language(session: Session, user_id: int, language: str) -> None:
    """Keep the interface language a person chose."""
    user = session.get(User, user_id)
    if user is not None:
        user.ui_language = language
        session.add(user)
        session.flush()


def set_persona(session: Session, user_id: int, name: str, description: str) -> bool:
    """Save a user's persona; False if there is no such user."""
    user = session.get(User, user_id)
    if user is None:
        return False
    user.persona_name, user.persona_description = name, description
    session.add(user)
    session.flush()
    return True


def list_users(session: Session) -> list[User]:
    """Everyone who has signed in (not the local user), by name."""
    stmt = select(User).where(col(User.id) != LOCAL_USER_ID).order_by(User.name, User.email)
    return list(session.exec(stmt).all())


def hand_over(session: Session, from_user: int, to_user: int) -> tuple[int, int]:
    """Give every character and conversation of one user to another; returns how many of each."""
    characters = session.exec(update(Character).where(col(Character.owner_id) == from_user).values(owner_id=to_user))
    conversations = session.exec(
        update(Conversation).where(col(Conversation.owner_id) == from_user).values(owner_id=to_user)
    )
    session.flush()
    return characters.rowcount, conversations.rowcount


def owned_counts(session: Session, user_id: int) -> tuple[int, int]:
    """How many characters and conversations a user has."""
    characters = session.exec(select(func.count(Character.id)).where(Character.owner_id == user_id)).one()
    conversations = session.exec(select(func.count(Conversation.id)).where(Conversation.owner_id == user_id)).one()
    return characters, conversations
