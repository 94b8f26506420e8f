"""The services every page goes through, on a real SQLite file: what they store, refuse and report."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlmodel import Session, func, select

from core.base.errors import NotFound, Refused
from core.base.profile import PROMPT_FIELDS, profile_of
from core.model.prompts import character_prompt
from core.services import characters, conversations, turns
from core.services.users import LOCAL_USER
from storage.tables import Character, Message, SheetImage
from tests.conftest import sheet_image as _image


def _count(engine, table) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count(table.id))).one()


def test_create_stores_whole_or_refuses_with_a_reason(engine) -> None:
    with pytest.raises(Refused) as info:
        characters.create(engine, LOCAL_USER, {"name": "No sheet"}, [])
    assert "main reference sheet" in str(info.value) and "主设定图" in info.value.message("zh")
    with pytest.raises(Refused) as info:  # a value of the wrong kind is named, and nothing is stored
        characters.create(engine, LOCAL_USER, {"name": "Tagged", "tags": "elf"}, [_image()])
    assert info.value.params["field"] == "tags"
    assert _count(engine, Character) == 0 and _count(engine, SheetImage) == 0
    made = characters.create(engine, LOCAL_USER, {"name": "Aster", "tags": ["elf"]}, [_image(), _image("blue")])
    assert made.owner_id == LOCAL_USER.id and made.tags == ["elf"] and made.language == "English"
    assert [i.original_name for i in characters.images(engine, LOCAL_USER, made.id)] == ["red.png", "blue.png"]


def test_update_duplicate_delete_and_images(engine) -> None:
    aster = characters.create(engine, LOCAL_USER, {"name": "Aster", "notes": "Shy."}, [_image(), _image("blue")])
    characters.update(engine, LOCAL_USER, aster.id, {"notes": "Brave now."})
    assert characters.get(engine, LOCAL_USER, aster.id).notes == "Brave now."
    assert characters.get(engine, LOCAL_USER, aster.id).name == "Aster"  # untouched fields stay
    copy = characters.duplicate(engine, LOCAL_USER, aster.id, " (copy)")
    assert copy.name == "Aster (copy)" and len(characters.images(engine, LOCAL_USER, copy.id)) == 2

    red, blue = characters.images(engine, LOCAL_USER, aster.id)
    characters.set_main_image(engine, LOCAL_USER, aster.id, blue.id)
    assert characters.main_sheet(engine, LOCAL_USER, aster.id).row.original_name == "blue.png"
    with pytest.raises(NotFound):  # another character's image is not this one's to change
        characters.remove_image(engine, LOCAL_USER, copy.id, red.id)
    characters.remove_image(engine, LOCAL_USER, aster.id, red.id)
    with pytest.raises(Refused, match="at least one reference sheet"):
        characters.remove_image(engine, LOCAL_USER, aster.id, blue.id)

    characters.delete(engine, LOCAL_USER, aster.id)
    with pytest.raises(NotFound) as info:
        characters.get(engine, LOCAL_USER, aster.id)
    assert "may have been deleted" in str(info.value)
    assert [s.name for s in characters.summaries(engine, LOCAL_USER)] == ["Aster (copy)"]


def test_a_conversation_opens_with_the_greeting_addressed_to_the_user(engine) -> None:
    mira = characters.create(
        engine, LOCAL_USER, {"name": "Mira", "first_mes": "Hello {{user}}, I am {{char}}.",
                             "alternate_greetings": ["Hi {{user}}!"]}, [_image()],
    )  # fmt: skip
    alice = replace(LOCAL_USER, display_name="Alice")  # the same user, known by name
    conversation = conversations.start(engine, alice, mira.id)
    (greeting,) = turns.story(engine, alice, conversation.id)
    assert (greeting.text, greeting.variants) == ("Hello Alice, I am Mira.", 2)
    turns.choose(engine, alice, conversation.id, greeting.turn, 1)
    assert turns.story(engine, alice, conversation.id)[0].text == "Hi Alice!"
    plain = conversations.start(engine, LOCAL_USER, mira.id)
    assert turns.story(engine, LOCAL_USER, plain.id)[0].text == "Hello you, I am Mira."
    assert [c.id for c in conversations.recent(engine, LOCAL_USER)] == [plain.id, conversation.id]
    assert conversations.recent(engine, LOCAL_USER)[0].character_name == "Mira"


def test_turns_send_edit_delete_and_a_missing_message(engine) -> None:
    sera = characters.create(engine, LOCAL_USER, {"name": "Sera", "first_mes": "Hi."}, [_image()])
    conversation = conversations.start(engine, LOCAL_USER, sera.id).id
    first = "First question, which is rather long for a title really"
    turns.send(engine, LOCAL_USER, conversation, first, [_image()])
    title = conversations.get(engine, LOCAL_USER, conversation).title  # the first line, cut to fit a list
    assert title == first[:47] + "…" and len(title) == turns.TITLE_LENGTH
    turns.send(engine, LOCAL_USER, conversation, "Second")
    story = turns.story(engine, LOCAL_USER, conversation)
    assert [b.text for b in story] == ["Hi.", "First question, which is rather long for a title really", "Second"]
    assert len(story[1].attachments) == 1 and turns.awaiting_reply(story)

    turns.edit(engine, LOCAL_USER, conversation, 1, "Edited")  # the rest of the story goes with it
    assert [b.text for b in turns.story(engine, LOCAL_USER, conversation)] == ["Hi.", "Edited"]
    turns.delete(engine, LOCAL_USER, conversation, 1)
    assert [b.text for b in turns.story(engine, LOCAL_USER, conversation)] == ["Hi."]
    with pytest.raises(NotFound):
        turns.edit(engine, LOCAL_USER, conversation, 7, "No such turn")
    with pytest.raises(NotFound):
        turns.choose(engine, LOCAL_USER, conversation, 0, 5)
    conversations.delete(engine, LOCAL_USER, conversation)
    with pytest.raises(NotFound):
        turns.send(engine, LOCAL_USER, conversation, "Anyone?")
    assert _count(engine, Message) == 0


def test_every_prompt_field_of_the_one_profile_reaches_the_instruction(engine) -> None:
    """Fields marked for the prompt in the profile definition are what the model reads, and only they."""
    values = {name: f"<{name}-value>" for name in PROMPT_FIELDS if name != "language"}
    values["creator_notes"] = "<creator-notes-value>"
    made = characters.create(engine, LOCAL_USER, values, [_image()])
    instruction = character_prompt(profile_of(made), [_image()]).instruction
    assert all(v in instruction for k, v in values.items() if k != "creator_notes")
    assert "<creator-notes-value>" not in instruction


def test_a_name_too_long_for_any_database_index_is_refused_by_length(engine) -> None:
    """The profile's own limits hold for whatever fills it (a form, a card, a draft, a backup)."""
    with pytest.raises(Refused) as info:
        characters.create(engine, LOCAL_USER, {"name": "N" * 201}, [_image()])
    assert info.value.params == {"field": "name", "limit": 200}
    assert "200" in info.value.message("en") and "200" in info.value.message("zh")
    made = characters.create(engine, LOCAL_USER, {"name": "N" * 200}, [_image()])
    with pytest.raises(Refused, match="at most 200"):
        characters.update(engine, LOCAL_USER, made.id, {"creator": "c" * 201})
    assert _count(engine, Character) == 1 and characters.get(engine, LOCAL_USER, made.id).creator == ""


def test_delete_takes_one_alternative_and_edit_keeps_the_old_reply(engine) -> None:
    """Deleting the reply on screen removes that alternative only (the one before it shows); an
    edited message keeps the reply to its old words as an alternative of the reply it gets next."""
    from storage import conversations as convs
    from storage.db import session_scope

    sera = characters.create(engine, LOCAL_USER, {"name": "Sera", "first_mes": "Hi."}, [_image()])
    chat = conversations.start(engine, LOCAL_USER, sera.id).id
    turns.send(engine, LOCAL_USER, chat, "Where am I?")
    with session_scope(engine) as s:
        turn = convs.append_message(s, chat, "assistant", "In the glade.").turn
        convs.add_variant(s, chat, turn, "In the forest.", "complete")
        convs.add_variant(s, chat, turn, "Somewhere safe.", "complete")
    turns.send(engine, LOCAL_USER, chat, "And then?")

    turns.delete(engine, LOCAL_USER, chat, turn)  # "Somewhere safe." goes; the one before shows
    shown = turns.story(engine, LOCAL_USER, chat)
    assert [b.text for b in shown] == ["Hi.", "Where am I?", "In the forest.", "And then?"]
    assert (shown[2].variant, shown[2].variants) == (1, 2)

    again = turns.edit(engine, LOCAL_USER, chat, 1, "Where is this?")
    assert again == turn  # the new words' reply is written as its newest alternative…
    shown = turns.story(engine, LOCAL_USER, chat)
    assert [b.text for b in shown] == ["Hi.", "Where is this?", "In the forest."]  # …what came after it went
    run = turns.reply(engine, LOCAL_USER, _EchoBackend(), chat, regenerate_turn=again)
    assert "".join(run) == "echo"
    assert [b.variants for b in turns.story(engine, LOCAL_USER, chat)][2] == 3  # the old replies stay

    for _ in range(3):
        turns.delete(engine, LOCAL_USER, chat, turn)
    assert [b.text for b in turns.story(engine, LOCAL_USER, chat)] == ["Hi.", "Where is this?"]
    with pytest.raises(NotFound):
        turns.delete(engine, LOCAL_USER, chat, turn)


class _EchoBackend:
    """TEST DOUBLE: a backend that answers "echo" and says it finished (no model needed for the rows)."""

    def stream(self, request, stop=None, on_progress=None):
        from core.model.backend import GenerationStats, ReplyStream

        stats = GenerationStats(finish="stop")
        return ReplyStream((chunk for chunk in ["echo"]), stats)
