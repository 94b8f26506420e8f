"""What the UI remembers between runs, in one place: each page's URL as a view, the browser session's
values as typed slots, and every widget key.

Streamlit gives a page two memories. The URL (`st.query_params`) says what is shown, so a link or a
reload opens it again: Chat's character and conversation, the Library's editor. The session
(`st.session_state`) holds the rest: a notice for the next run, a reply to write, a counter that gives
an uploader a fresh key. Pages and `ui/` reach both only through this module, so each value is
spelled once, has one type, and says who writes it and who reads it. Widget keys are session keys
too (Streamlit keeps a widget's value under its key): they are built here, by `key.*` or by a slot
whose `.key` a widget takes; a test checks that nobody else builds one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar, overload

import streamlit as st

if TYPE_CHECKING:
    from core.base.errors import UserError
    from core.services.turns import Seen
    from core.services.users import Actor, NotAllowed

T = TypeVar("T")
MAX_ID = 2**63 - 1  # the largest id a database column holds


class Slot(Generic[T]):
    """One value of this browser session, under one key."""

    def __init__(self, key: str) -> None:
        self.key = key

    @overload
    def get(self) -> T | None: ...
    @overload
    def get(self, default: T) -> T: ...
    def get(self, default: T | None = None) -> T | None:
        return st.session_state.get(self.key, default)

    def set(self, value: T) -> None:
        st.session_state[self.key] = value

    def pop(self) -> T | None:
        return st.session_state.pop(self.key, None)

    def setdefault(self, value: T) -> T:
        return st.session_state.setdefault(self.key, value)

    def __repr__(self) -> str:
        return f"Slot({self.key!r})"


# -- the URL: what each page shows ----------------------------------------------------------------------
def _id(raw: str | None) -> int | None:
    """A row id from the URL: a positive whole number in ASCII digits, else None (`abc`, `-1`, `0`, `1e3`)."""
    if raw is None or not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


@dataclass(frozen=True)
class ChatView:
    """Chat's URL, `/chat?character=3&conversation=12`: read once per run by pages/chat.py, which
    writes it back (`show`) whenever the user picks another character or conversation."""

    character: int | None = None
    conversation: int | None = None
    unusable: bool = False  # the link named something that is not an id (`abc`, `-1`, `0`)

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> ChatView:
        character, conversation = _id(query.get("character")), _id(query.get("conversation"))
        named = [(query.get(n), v) for n, v in (("character", character), ("conversation", conversation))]
        return cls(character, conversation, any(raw is not None and value is None for raw, value in named))

    @property
    def query(self) -> dict[str, int]:
        """As `st.page_link`'s `query_params` (Home's Continue, the Library's Chat, Create's Start chatting)."""
        shown = {"character": self.character, "conversation": self.conversation}
        return {name: value for name, value in shown.items() if value is not None}

    def show(self) -> None:
        """Point the URL (the source of truth for what Chat shows) here."""
        st.query_params.from_dict(self.query)


@dataclass(frozen=True)
class LibraryView:
    """The Library's URL: `/library`, or `/library?edit=3` for the editor. Written by Edit and Back
    (pages/library.py), read once per run by that page."""

    edit: int | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> LibraryView:
        return cls(_id(query.get("edit")))

    def show(self) -> None:
        st.query_params.from_dict({} if self.edit is None else {"edit": self.edit})


# -- the session: shared by every page -----------------------------------------------------------------
SIGNED_IN_AS: Slot[tuple[tuple[object, ...], Actor | NotAllowed]] = Slot("signed_in_as")
"""Who signed in, and what the sign-in policy said of them: written and read by ui/auth.py (once per identity)."""

PREPARED_UPLOADS: Slot[dict[Any, Any]] = Slot("prepared_uploads")
"""Uploads already checked, by upload id: written and read by `ui.widgets.checked_uploads`, dropped once stored."""

CARD_DRAFTS: Slot[dict[str, Any]] = Slot("card_drafts")
"""Cards already read, by upload id: written and read by `ui.widgets.card_upload`, dropped once stored."""

RETRY_MODEL: Slot[bool] = Slot("retry_model")
"""Try loading the model again although it failed: set by the retry buttons (ui/chat.py, ui/draft.py), taken by
`ui.chat.ensure_ready`; pages/chat.py looks at it to decide what to do."""

UI_LANGUAGE: Slot[str] = Slot("ui_lang_choice")
"""This session's UI language: set by ui/language.py from the cookie or the browser's locale, by the person's
saved choice, and by the sidebar's picker; read by `ui.language.lang` on every run."""

UI_LANGUAGE_ADOPTED: Slot[bool] = Slot("ui_lang_adopted")
"""The person's saved language has been taken (once a session): `ui.language.adopt`."""

UI_LANGUAGE_COOKIE: Slot[str] = Slot("ui_lang_cookie_written")
"""The language this session last wrote to the browser's cookie: `ui.language.language_switch`."""

UI_LANGUAGE_PICK: Slot[str] = Slot("ui_lang")
"""The sidebar's language picker (its widget key): set from UI_LANGUAGE and read by its on_change (ui/language.py).
Streamlit forgets it when the page that drew it is left, hence UI_LANGUAGE."""


def confirm(name: str) -> Slot[dict[str, Any]]:
    """The confirm dialog `name` is open, with this context: set by `ui.widgets.ask_to_confirm`, read and
    dropped by `ui.widgets.confirmation`."""
    return Slot(f"confirm:{name}")


def fresh(area: str) -> Slot[tuple[int, object]]:
    """Which of an area's two slots holds what it shows: written and read by `ui.widgets.fresh_area`."""
    return Slot(f"fresh:{area}")


# -- Create ---------------------------------------------------------------------------------------------
class Created(TypedDict):
    id: int
    name: str


CREATED: Slot[Created] = Slot("created_character")
"""The character just created: set by Create's submit, read by pages/create.py (its "ready" notice), dropped
by "Create another"."""

CREATE_FORM: Slot[int] = Slot("create_form")
"""The round of Create's form: bumped by "Create another" so that every input starts empty (pages/create.py)."""


def card_applied(form: int) -> Slot[str]:
    """The upload id of the card that filled this round of Create's form (once per card): pages/create.py."""
    return Slot(f"card_applied_{form}")


# -- the character form (Create, and the Library's editor) ---------------------------------------------
def editor_inputs(character_id: int) -> str:
    """Where the Library's editor keeps its inputs (`field(name, editor_inputs(3))`); Create's are the round
    of its form."""
    return f"e{character_id}"


def field(name: str, form: str | int) -> Slot[Any]:
    """A profile input's value (its widget key): drawn by ui/profile_form.py, filled by a card (pages/create.py)
    and by a draft (ui/draft.py), read by the draft (notes, name, language)."""
    return Slot(f"{name}_{form}")


def forget_fields(names: Sequence[str], form: str | int) -> None:
    """Drop a form's inputs, so that it shows what is stored when it opens again (the editor's Back)."""
    for name in names:
        field(name, form).pop()


EDITOR_SHOWN: Slot[int] = Slot("editor_shown")
"""The character whose inputs the editor holds: set when pages/library.py draws the editor, read there on
the next run to forget them once the editor is left (Back, a link, the menu)."""


def draft_done(form: str | int) -> Slot[tuple[str, str | None]]:
    """A finished draft (its text, and the one field asked for): set by ui/draft.py as it ends, put into the
    inputs by `ui.draft.apply_draft` on the next run."""
    return Slot(f"draft_done_{form}")


def draft_partial(form: str | int) -> Slot[tuple[str, str | None]]:
    """A draft so far, kept while it streams: ui/draft.py; what Stop leaves is applied like a finished one."""
    return Slot(f"draft_partial_{form}")


def draft_notice(form: str | int) -> Slot[tuple[str, bool]]:
    """What a draft did (and whether it found fields): set by `apply_draft`, shown once by `draft_controls`."""
    return Slot(f"draft_notice_{form}")


def draft_redo(form: str | int) -> Slot[tuple[str | None]]:
    """The draft to start again once the model loads: set by the draft's retry button, taken by `draft_controls`."""
    return Slot(f"draft_redo_{form}")


# -- Library --------------------------------------------------------------------------------------------
LIBRARY_ERROR: Slot[str] = Slot("library_error")
"""A refusal from a Library callback (ui/team.py's share switch too), said by pages/library.py on its next run."""

LIBRARY_PAGE: Slot[int] = Slot("library_page")
"""Which page of cards the Library shows: written by its pager and reset by a new search (pages/library.py)."""

ADD_ROUND: Slot[int] = Slot("add_round")
"""The round of the editor's "Add images" uploader, bumped after an add so the files are not added twice."""

HAND_OVER_NOTICE: Slot[str] = Slot("hand_over_notice")
"""What the admin's hand-over did: set by ui/team.py before its rerun, shown there once."""


def share_switch(character_id: int) -> Slot[bool]:
    """The editor's share switch (its widget key): drawn and read by ui/team.py."""
    return Slot(f"share_{character_id}")


# -- Chat -----------------------------------------------------------------------------------------------
CHARACTER_PICK: Slot[int] = Slot("character_pick")
"""The sidebar's character picker (its widget key): set from the URL by pages/chat.py, read by its on_change."""

CONVERSATION_PICK: Slot[int] = Slot("conversation_pick")
"""The sidebar's conversation picker (its widget key): as CHARACTER_PICK."""


@dataclass(frozen=True)
class ReplyPlan:
    """A reply to write in `conversation_id`: the next turn, a new alternative of `regenerate_turn`, or
    more of the unfinished reply of `continue_turn`; `into`, the row kept for the reply to a message
    just sent; `seen`, what the page showed when it was asked for (refused if the conversation moved
    on; None: not checked, as for the reply to a message just sent or edited)."""

    conversation_id: int
    regenerate_turn: int | None = None
    continue_turn: int | None = None
    seen: Seen | None = None
    into: int | None = None

    @property
    def replaces(self) -> int | None:
        """The turn whose bubble the reply being written takes the place of, if any."""
        return self.regenerate_turn if self.regenerate_turn is not None else self.continue_turn


REPLY_PLAN: Slot[ReplyPlan] = Slot("reply_plan")
"""The reply to write next: set by a chat button or an edit sent again (ui/chat.py), taken by pages/chat.py."""

CHAT_ERROR: Slot[str] = Slot("chat_error")
"""A refusal from a chat button's callback (ui/chat.py), said beside the conversation on the next run."""

EDITING_TURN: Slot[int] = Slot("editing_turn")
"""The message being edited: set by its Edit button, dropped by Cancel or Save and resend (ui/chat.py)."""

LOADED_FOR: Slot[float] = Slot("loaded_for")
"""Seconds the model took to load for the reply about to be written: set by ensure_ready, added to
that reply's wait (ui/chat.py)."""

OWN_REPLY: Slot[int] = Slot("own_reply")
"""The reply this session is (or was just) writing: set by stream_reply (ui/chat.py), read by bubble()
so that a reply this person stopped reads as theirs, not as "being written" by someone else."""

LINK_NOT_FOUND: Slot[str] = Slot("link_not_found")
"""A deep link that named something not here: set by pages/chat.py before it shows what is, said once."""


class Rejected(TypedDict):
    text: str
    errors: list[str]


REJECTED: Slot[Rejected] = Slot("rejected_draft")
"""A message that was not sent (a bad attachment, a full disk): set by pages/chat.py before its rerun, shown
back there once so that nothing typed is lost."""


def window(conversation_id: int) -> Slot[int]:
    """How many of a conversation's latest messages Chat shows: "Show earlier" adds to it (pages/chat.py)."""
    return Slot(f"window_{conversation_id}")


def chat_input_text(conversation_id: int) -> Slot[str]:
    """The chat box's text (its widget key): set by pages/chat.py, before the box is drawn, to give back
    a message that was not sent."""
    return Slot(key.chat_input(conversation_id))


def edit_text(turn: int) -> Slot[str]:
    """The text of a message being edited (its widget key): drawn and read by ui/chat.py."""
    return Slot(f"edit_text_{turn}")


CHAT_IMPORT_NOTICE: Slot[str] = Slot("chat_import_notice")
"""What a chat import brought: set by `ui.chat_files.import_chat` before the page reruns, shown there once."""

CHAT_IMPORT_ROUND: Slot[int] = Slot("chat_import_round")
"""The round of the chat import's uploader, bumped after an import so the file is not imported twice."""

CHAT_IMPORT_REFUSED: Slot[dict[str, UserError]] = Slot("chat_import_refused")
"""Chat files already refused, by upload id (read once): ui/chat_files.py."""


# -- widget keys that hold nothing the app reads back ---------------------------------------------------
class key:  # lower case: read as `state.key.edit_character(3)`
    """Widget keys. A key that names a row keeps each row's widget apart; one with a round starts afresh
    when the round changes."""

    # every page
    SIGN_OUT = "sign_out"
    HAND_OVER_TO = "hand_over_to"
    PERSONA_FORM = "persona"

    @staticmethod
    def confirm_yes(name: str) -> str:
        return f"{name}_yes"

    @staticmethod
    def confirm_no(name: str) -> str:
        return f"{name}_no"

    # Create
    @staticmethod
    def card(form: int) -> str:
        return f"card_{form}"

    @staticmethod
    def main_sheet(form: int) -> str:
        return f"main_{form}"

    @staticmethod
    def extra_images(form: int) -> str:
        return f"extra_{form}"

    # the character form's "Read the sheet"
    @staticmethod
    def draft_all(form: str | int) -> str:
        return f"draft_all_{form}"

    @staticmethod
    def draft_field(form: str | int, language: str) -> str:
        """The field picker: its options are labels, so each UI language has its own."""
        return f"draft_field_{form}_{language}"

    @staticmethod
    def draft_one(form: str | int) -> str:
        return f"draft_one_{form}"

    @staticmethod
    def draft_retry(form: str | int) -> str:
        return f"draft_retry_{form}"

    @staticmethod
    def draft_stop(form: str | int) -> str:
        return f"draft_stop_{form}"

    # Library
    LIBRARY_QUERY = "library_query"
    PAGE_BACK = "page_back"
    PAGE_NEXT = "page_next"
    BACKUP_DOWNLOAD = "backup_download"
    BACKUP_UPLOAD = "backup_upload"
    BACKUP_RESTORE = "backup_restore"

    @staticmethod
    def edit_character(character_id: int) -> str:
        return f"edit_{character_id}"

    @staticmethod
    def duplicate(character_id: int) -> str:
        return f"dup_{character_id}"

    @staticmethod
    def delete_character(character_id: int) -> str:
        return f"del_{character_id}"

    @staticmethod
    def editor_form(character_id: int) -> str:
        return f"editor_{character_id}"  # never the Edit button's key: one page may hold both

    @staticmethod
    def make_main(image_id: int) -> str:
        return f"main_{image_id}"

    @staticmethod
    def remove_image(image_id: int) -> str:
        return f"remove_{image_id}"

    @staticmethod
    def add_images(character_id: int, round_: int) -> str:
        return f"add_{character_id}_{round_}"

    # Chat
    RENAME = "rename"
    DELETE_CONVERSATION = "delete_conversation"
    STOP = "stop"
    STOP_CONNECTING = "stop_connecting"

    @staticmethod
    def title(conversation_id: int) -> str:
        return f"title_{conversation_id}"

    @staticmethod
    def chat_input(conversation_id: int) -> str:
        """Words typed here can only ever go into this conversation."""
        return f"chat_input_{conversation_id}"

    @staticmethod
    def sampler_form(conversation_id: int) -> str:
        return f"sampler_{conversation_id}"

    @staticmethod
    def export_markdown(conversation_id: int) -> str:
        return f"export_md_{conversation_id}"

    @staticmethod
    def export_jsonl(conversation_id: int) -> str:
        return f"export_jsonl_{conversation_id}"

    @staticmethod
    def chat_import(character_id: int, round_: int) -> str:
        return f"chat_import_{character_id}_{round_}"

    @staticmethod
    def continue_reply(turn: int) -> str:
        return f"continue_{turn}"

    @staticmethod
    def regenerate(turn: int) -> str:
        return f"regen_{turn}"

    @staticmethod
    def edit_message(turn: int) -> str:
        """The Edit button, and the form it opens."""
        return f"edit_{turn}"

    @staticmethod
    def delete_message(turn: int) -> str:
        return f"del_{turn}"

    @staticmethod
    def hide_message(turn: int) -> str:
        """Hide a message from the model, or show it to the model again."""
        return f"hide_{turn}"

    @staticmethod
    def previous(turn: int) -> str:
        return f"prev_{turn}"

    @staticmethod
    def next(turn: int) -> str:
        return f"next_{turn}"
