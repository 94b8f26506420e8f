"""One base for every error a person reads: a code and parameters, translated when it is shown.

Storing the code and parameters (not a sentence) lets the same failure read in English for one
viewer and in Chinese for another. `namespace` + `code` is the key of its string (the `msgctxt`) in
`core/base/locales/<lang>.po`; a test checks that every code raised has one in every language.
"""

from __future__ import annotations

from typing import Any, ClassVar

from core.base.i18n import Text


class UserError(Exception):
    """Something the user (or the operator) can act on; `message(lang)` says what to do."""

    namespace: ClassVar[str] = "error"

    def __init__(self, code: str, **params: Any) -> None:
        self.code, self.params = code, params
        super().__init__(self.message("en"))

    @property
    def text(self) -> Text:
        return Text(f"{self.namespace}.{self.code}", self.params)

    def message(self, lang: str = "en") -> str:
        return self.text.render(lang)


class NotFound(UserError):
    """The character, conversation, message or image is not there (or not the actor's to see).

    Deleted in another tab, or never there: the page says so and moves on."""

    namespace = "notfound"


class Refused(UserError):
    """A request that would leave the data in a state the app does not allow (e.g. no main sheet)."""

    namespace = "refused"


class Changed(UserError):
    """The conversation moved on since the page showed it (another window or replica acted on it):
    the action is refused, and the page shows the conversation as it is now."""

    namespace = "changed"


class StorageFull(UserError):
    """No room left on the disk that holds the data: nothing of this change was stored."""

    namespace = "storage"

    def __init__(self) -> None:
        super().__init__("full")
