"""A payload in every field a user, a card, a file or a model can fill, and every page drawn with it
(Home, Library and its editor, Create after importing a card, Chat, a restore's refusal): no image,
link or HTML reaches Streamlit's Markdown anywhere, read as a Markdown renderer reads it.
(The same in a real browser with its requests watched: `test_browser.py`; the identity provider's
name: `test_teams_browser.py`.)"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from tests.conftest import new_app, sheet_image
from tests.test_inert import active

pytestmark = pytest.mark.slow

# One line (names and titles are one line) holding every form that makes a browser fetch or follow.
LINE = ("P ![a](https:evil.test/1) ![b](//evil.test/2) ![c][r] <img src=https://evil.test/4> "
        "<https://evil.test/5> [l](https://evil.test/6) https://evil.test/7 www.evil.com x@evil.com")  # fmt: skip
TEXT = f"{LINE}\n\n[r]: https:evil.test/3\n\n![d][]\n\n[d]: //evil.test/8"
MARKDOWN_FIELDS = {"body", "label", "help", "caption", "text"}  # what Streamlit renders as Markdown…
PLAIN = {"Text", "Code"}  # …except in these elements, which show text as it is


def strings(at) -> Iterator[tuple[str, str]]:
    """(where, text) for every Markdown string the app sent to the browser."""

    def walk(node: Any) -> Iterator[Any]:
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    for node in walk(at._tree):
        proto = getattr(node, "proto", None)
        if proto is None or type(node).__name__ in PLAIN:
            continue
        yield from _markdown_of(MessageToDict(proto), type(node).__name__)


def _markdown_of(value: Any, where: str, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        radio = "options" in value and "horizontal" in value  # radio options are Markdown too
        for k, v in value.items():
            yield from _markdown_of(v, f"{where}.{k}", "body" if (radio and k == "options") else k)
    elif isinstance(value, list):
        for item in value:
            yield from _markdown_of(item, where, key)
    elif isinstance(value, str) and key in MARKDOWN_FIELDS:
        yield where, value


def assert_inert(at, page: str) -> int:
    live = [(where, text[:120], found) for where, text in strings(at) if "evil" in text and (found := active(text))]
    assert live == [], f"{page}: {live[:5]}"
    assert not at.exception, [e.value for e in at.exception]
    return sum("evil" in text for _, text in strings(at))


def hostile_card() -> bytes:
    """A V3 card (JSON) with the payload in every field, a reference picture named with it, and one
    whose bytes are broken (the warning names it)."""
    png = sheet_image("purple").data
    fields = {name: TEXT for name in ("description", "personality", "scenario", "first_mes", "mes_example",
                                      "creator_notes", "system_prompt", "post_history_instructions")}  # fmt: skip
    data = {**fields, "name": LINE, "creator": LINE, "character_version": LINE, "tags": [LINE, "calm"],
            "alternate_greetings": [TEXT], "nickname": LINE,
            "creator_notes_multilingual": {"en": TEXT},
            "character_book": {"name": LINE, "extensions": {},
                               "entries": [{"keys": [LINE], "content": TEXT, "enabled": True, "extensions": {}}]},
            "assets": [{"type": "x_refsheet_reference", "name": LINE, "ext": "png",
                        "uri": "data:image/png;base64," + base64.b64encode(png).decode()},
                       {"type": "x_refsheet_reference", "name": f"broken {LINE}", "ext": "png",
                        "uri": "data:image/png;base64,AAAA"}]}  # fmt: skip
    return json.dumps({"spec": "chara_card_v3", "spec_version": "3.0", "data": data}).encode()


def test_no_page_turns_a_stored_payload_into_an_image_a_link_or_html(app_env, app_db) -> None:
    from core.services import backup, characters, conversations, turns
    from core.services.users import LOCAL_USER, save_persona
    from storage import conversations as convs
    from storage.db import session_scope
    from storage.tables import MessageStatus

    save_persona(app_db, LOCAL_USER, LINE[:100], TEXT)
    profile = {"name": LINE, "notes": TEXT, "language": LINE, "tags": [LINE], "creator": LINE, "description": TEXT,
               "first_mes": TEXT, "alternate_greetings": [TEXT], "scenario": TEXT, "creator_notes": TEXT,
               "character_book": {"entries": [{"keys": [LINE], "content": TEXT, "enabled": True}]}}  # fmt: skip
    main, extra = sheet_image("red"), sheet_image("blue")
    extra = dataclasses.replace(extra, name=LINE)
    character = characters.create(app_db, LOCAL_USER, profile, [main, extra])
    chat = conversations.start(app_db, LOCAL_USER, character.id, LINE)
    turns.send(app_db, LOCAL_USER, chat.id, TEXT, [sheet_image("green")])
    with session_scope(app_db) as s:  # replies that failed, their stored reasons and figures hostile
        for error, stats in (
            ({"key": "chat.error.other", "params": {"reason": TEXT}}, {}),
            ({"key": LINE}, {}),  # a key that names no string (a restored row)
            ({"key": "chat.error.other"}, {"prompt_tokens": "many", "queued_s": "soon"}),  # no reason; odd figures
            ({"key": "chat.error.other", "params": {"reason": [LINE]}},  # the reply whose caption shows
             {"dropped_turns": [LINE], "new_tokens": 5, "queued_s": "soon", "prompt_tokens": "many"}),
        ):  # fmt: skip
            failed = convs.append_message(s, chat.id, "assistant", TEXT, status=MessageStatus.PARTIAL)
            convs.update_message(s, failed.id, status=MessageStatus.PARTIAL, error=json.dumps(error), stats=stats)
    turns.send(app_db, LOCAL_USER, chat.id, TEXT)

    seen = 0
    at = new_app()
    seen += assert_inert(at, "Home")
    at = new_app("pages/library.py")
    seen += assert_inert(at, "Library")
    next(b for b in at.button if b.key == f"edit_{character.id}").click().run()
    seen += assert_inert(at, "Library editor")
    at.switch_page("pages/chat.py").run()
    seen += assert_inert(at, "Chat")
    at = new_app("pages/chat.py", character=character.id, conversation=chat.id)
    seen += assert_inert(at, "Chat deep link")
    assert any("0 prompt tokens" in c.value for c in at.caption)  # the odd figures read as 0, the page stands
    assert seen > 20  # the payload was on those pages, made harmless: not absent

    at = new_app("pages/create.py")
    at.file_uploader(key="card_0").set_value(("card.json", hostile_card(), "application/json")).run()
    assert any("is not an image" in w.value and "evil" in w.value for w in at.warning)  # the warning names it…
    assert_inert(at, "Create after a card import")  # …without making it live

    at = new_app("pages/library.py")
    raw = _with_member(backup.backup(app_db, LOCAL_USER), f"images/{LINE[:150]}.png")
    at.file_uploader(key="backup_upload").set_value(("evil.zip", raw, "application/zip")).run()
    next(b for b in at.button if b.key == "backup_restore").click().run()
    assert at.error and "evil" in at.error[0].value
    assert_inert(at, "a refused restore")


def _with_member(raw: bytes, name: str) -> bytes:
    """The backup with one more member, named with the payload (only its name is hostile)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as source, zipfile.ZipFile(out, "w") as archive:
        for member in source.namelist():
            archive.writestr(member, source.read(member))
        archive.writestr(name, b"x")
    return out.getvalue()
