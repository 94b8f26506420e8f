"""Who is acting. Every service call carries an `Actor`; single-user mode passes `LOCAL_USER`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """The person on whose behalf a service runs. `id` is what rows record as their owner."""

    id: str
    display_name: str = ""  # fills {{user}} in cards and greetings ("you" when empty)
    is_admin: bool = False

    @property
    def user_name(self) -> str:
        return self.display_name.strip() or "you"


LOCAL_USER = Actor(id="local", is_admin=True)  # the one user of a laptop install: no sign-in
