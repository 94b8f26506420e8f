"""Personas: the user's name and description, per person, reaching greetings and the character's instruction."""

from __future__ import annotations

import pytest

from core.base.errors import Refused
from core.services import characters, conversations, turns, users
from core.services.users import LOCAL_USER
from storage.db import make_engine, migrate
from tests.conftest import new_app, person
from tests.conftest import sheet_image as _image


def _greeted(engine, actor) -> str:
    made = characters.create(engine, actor, {"name": "Aster", "first_mes": "Welcome, {{user}}!"}, [_image()])
    chat = conversations.start(engine, actor, made.id)
    return turns.story(engine, actor, chat.id)[0].text


def test_the_persona_names_the_user_in_greetings_and_tells_the_character(engine) -> None:
    assert _greeted(engine, users.current(engine, LOCAL_USER)) == "Welcome, you!"
    users.save_persona(engine, LOCAL_USER, "  Alex ", "A travelling painter, new in town.")
    me = users.current(engine, LOCAL_USER)
    assert me.user_name == "Alex"
    assert _greeted(engine, me) == "Welcome, Alex!"
    chat = conversations.recent(engine, me)[0]
    instruction = turns.request_for(engine, me, chat.id).prefix.instruction
    assert "You are talking with Alex." in instruction and "A travelling painter, new in town." in instruction


def test_no_persona_leaves_the_instruction_as_it_was(engine) -> None:
    """Without a persona nothing is added: the saved character prefixes of earlier versions still match."""
    made = characters.create(engine, LOCAL_USER, {"name": "Aster"}, [_image()])
    chat = conversations.start(engine, LOCAL_USER, made.id)
    instruction = turns.request_for(engine, users.current(engine, LOCAL_USER), chat.id).prefix.instruction
    assert "talking with" not in instruction


def test_a_persona_survives_a_restart_and_too_long_is_refused(db_url) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    users.save_persona(engine, LOCAL_USER, "Alex", "Painter.")
    with pytest.raises(Refused) as refused:
        users.save_persona(engine, LOCAL_USER, "A" * 101, "")
    assert "100" in refused.value.message("en") and "100" in refused.value.message("zh")
    with pytest.raises(Refused):
        users.save_persona(engine, LOCAL_USER, "Alex", "x" * 2001)
    engine.dispose()
    again = make_engine(db_url)
    stored = users.current(again, LOCAL_USER).persona
    assert stored == users.Persona("Alex", "Painter.")  # the refusals stored nothing
    again.dispose()


def test_each_signed_in_person_has_their_own_persona(engine) -> None:
    alice, bob = person(engine, "alice"), person(engine, "bob")
    assert users.current(engine, bob).user_name == "Bob"  # the provider's name until they choose one
    users.save_persona(engine, alice, "Captain A", "Leads the expedition.")
    assert users.current(engine, alice).user_name == "Captain A"
    assert users.current(engine, bob).persona == users.Persona()
    assert users.current(engine, LOCAL_USER).persona == users.Persona()


@pytest.mark.slow
def test_the_persona_is_set_from_the_sidebar(app_env, app_db) -> None:
    at = new_app("pages/library.py")  # every page has it (Home's live status fragment confuses AppTest's forms)
    assert any("({{user}} in cards)" in caption.value for caption in at.caption)  # the cards' macro, as cards spell it
    [name] = [t for t in at.sidebar.text_input if t.label == "Your name"]
    name.input("Alex")
    [about] = [t for t in at.sidebar.text_area if t.label == "About you (optional)"]
    about.input("A painter.")
    [save] = [b for b in at.sidebar.button if b.label == "Save"]
    save.click().run()
    assert not at.exception
    assert users.current(app_db, LOCAL_USER).persona == users.Persona("Alex", "A painter.")
    assert at.sidebar.text_input[0].value == "Alex"  # the form shows what is saved
