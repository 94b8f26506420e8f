"""Character books: the real Seraphina card's lore reaches the prompt when the talk turns to it."""

from __future__ import annotations

import pytest

from core.base.lore import Lorebook
from core.base.profile import Profile
from core.base.sheets import Picture, prepare_image
from core.formats.cards import profile_from_card, read_card
from core.model.prompts import Turn, build_messages, character_prompt
from core.services import characters, conversations, turns
from core.services.users import LOCAL_USER


@pytest.fixture
def card(shared):
    return read_card((shared / "cards" / "default_Seraphina.png").read_bytes())


@pytest.fixture
def sheet(card) -> Picture:
    prepared = prepare_image(card.image, "card.png")
    return prepared


def _user_texts(messages) -> list[str]:
    return [c["text"] for m in messages[1:] if m["role"] == "user" for c in m["content"] if c["type"] == "text"]


def test_the_real_card_book_is_read(card) -> None:
    book = Lorebook.from_card(card.data["character_book"])
    assert len(book.entries) == 4 and not book.constant
    (forest,) = book.triggered(["Tell me about the Magical Forest."])
    assert "What is Eldoria?" in forest.content
    assert book.triggered(["I like woodwork and the woods."]) == []  # keys are whole words
    assert [e.keys[0] for e in book.triggered(["Are there monsters?", "Can you use magic?"])] == ["shadowfang", "power"]


def test_lore_joins_the_turn_that_mentions_it_once(card, sheet) -> None:
    book = Lorebook.from_card(card.data["character_book"])
    prefix = character_prompt(Profile(name="Seraphina"), [sheet], book)
    history = [
        Turn("assistant", "You are safe now."),
        Turn("user", "Where am I?"),
        Turn("assistant", "In my glade."),  # the reply's words count too (scan depth 2)
        Turn("user", "Is it safe?"),
        Turn("assistant", "Yes."),
        Turn("user", "What about the glade at night?"),  # already known: not added again
    ]
    texts = _user_texts(build_messages(prefix, history)[0])
    assert texts[0] == "Where am I?"
    assert texts[1].startswith("(Background you know") and texts[1].endswith("Is it safe?")
    assert "What is the glade?" in texts[1] and "{{char}}" not in texts[1] and "Seraphina:" in texts[1]
    assert texts[2] == "What about the glade at night?"
    # Earlier turns read the same however long the conversation grows (so KV caches stay valid).
    assert _user_texts(build_messages(prefix, history[:4])[0]) == texts[:2]


def test_constant_entries_and_selective_keys() -> None:
    book = Lorebook.from_card(
        {
            "entries": [
                {"keys": [], "content": "The moon is green here.", "constant": True},
                {"keys": ["dragon"], "secondary_keys": ["egg"], "selective": True, "content": "Dragon eggs hatch."},
                {"keys": ["龙"], "content": "龙住在山里。"},
                {"keys": ["ghost"], "content": "Off.", "enabled": False},
            ]
        }
    )
    assert [e.content for e in book.constant] == ["The moon is green here."]
    assert book.triggered(["A dragon!"]) == []
    assert [e.content for e in book.triggered(["A dragon egg!"])] == ["Dragon eggs hatch."]
    assert [e.content for e in book.triggered(["我看见一条龙。"])] == ["龙住在山里。"]  # CJK: no spaces
    assert book.triggered(["A ghost?"]) == []
    prefix = character_prompt(Profile(name="Aster"), [Picture("0" * 64, b"")], book)
    assert "What you know:\n- The moon is green here." in prefix.instruction


def test_an_imported_card_brings_its_lore_into_the_reply_request(engine, card) -> None:
    character = characters.create(engine, LOCAL_USER, profile_from_card(card), [prepare_image(card.image, "card.png")])
    conversation = conversations.start(engine, LOCAL_USER, character.id)
    turns.send(engine, LOCAL_USER, conversation.id, "What are those beasts in the woods?")
    request = turns.request_for(engine, LOCAL_USER, conversation.id)
    messages, _ = build_messages(request.prefix, request.history)
    assert "What are Shadowfangs?" in _user_texts(messages)[-1]
