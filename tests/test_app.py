"""The real app in Streamlit's AppTest with the tiny offline Gemma 3 (no model mocks).

Every test starts from an empty data directory; `new_app()` is a new browser session, and a new
AppTest after the first one is what a restarted server would show.
"""

from __future__ import annotations

import pytest
from PIL import Image
from sqlmodel import Session, func, select

from core.base.sheets import prepare_image
from storage import characters as chars
from storage import conversations as convs
from storage.db import session_scope
from storage.tables import Character, Message, SheetImage
from tests.conftest import encode, new_app

pytestmark = pytest.mark.slow


def button(at, label: str, key: str | None = None):
    matches = [b for b in at.button if (key and b.key == key) or (not key and b.label == label)]
    assert matches, f"no button {label or key!r} among {[b.label for b in at.button]}"
    return matches[0]


def chat_texts(at) -> list[tuple[str, str]]:
    """(role, text) of every chat bubble, as the user sees them."""
    return [(m.name, m.markdown[0].value if m.markdown else "") for m in at.chat_message]


def seed_character(db, png: bytes, name: str = "Seraphina", notes: str = "Guardian of the forest", **profile):
    with session_scope(db) as s:
        return chars.create_character(s, [prepare_image(png, "sheet.png")], name=name, notes=notes, **profile).id


# -- Create -----------------------------------------------------------------------------------------
def test_create_rejects_bad_uploads_and_stores_nothing(app_env, app_db, neutral_png: bytes) -> None:
    at = new_app("pages/create.py")
    at.file_uploader(key="main_0").set_value(("notes.png", b"this is not a picture", "image/png")).run()
    assert any("is not an image" in e.value for e in at.error)
    button(at, "Create character").click().run()
    assert any("nothing was saved" in e.value for e in at.error)

    at.file_uploader(key="main_0").set_value(("sheet.png", neutral_png, "image/png"))
    at.file_uploader(key="extra_0").set_value([("broken.png", neutral_png[:4000], "image/png")]).run()
    assert any("damaged or incomplete" in e.value and "broken.png" in e.value for e in at.error)
    button(at, "Create character").click().run()
    with Session(app_db) as s:
        assert s.exec(select(func.count(Character.id))).one() == 0
        assert s.exec(select(func.count(SheetImage.id))).one() == 0


def test_create_needs_a_main_sheet(app_env) -> None:
    at = new_app("pages/create.py")
    button(at, "Create character").click().run()
    assert any("Upload the main reference sheet first" in e.value for e in at.error)


def test_create_stores_the_character_and_offers_chat(app_env, app_db, neutral_png, joy_png) -> None:
    at = new_app("pages/create.py")
    at.file_uploader(key="main_0").set_value(("seraphina_neutral.png", neutral_png, "image/png"))
    at.file_uploader(key="extra_0").set_value([("seraphina_joy.png", joy_png, "image/png")]).run()
    assert not at.error
    assert len(at.get("image")) == 2  # previews of both images
    at.text_input[0].set_value("Seraphina")
    at.text_area[0].set_value("Guardian of the Eldoria forest. Speaks softly.")
    at.selectbox(key="language_0").set_value("日本語")
    button(at, "Create character").click().run()
    assert any("Seraphina is ready" in s.value for s in at.success)
    assert any(link.label == "Start chatting" for link in at.get("page_link"))
    with Session(app_db) as s:
        (character,) = s.exec(select(Character)).all()
        assert (character.name, character.language) == ("Seraphina", "日本語")
        assert character.notes == "Guardian of the Eldoria forest. Speaks softly."
        assert [i.original_name for i in chars.get_images(s, character.id)] == [
            "seraphina_neutral.png",
            "seraphina_joy.png",
        ]


# -- Library ----------------------------------------------------------------------------------------
def test_library_search_edit_duplicate_delete(app_env, app_db, neutral_png, joy_png) -> None:
    sera = seed_character(app_db, neutral_png)
    seed_character(app_db, joy_png, name="Bob", notes="A sailor")
    with session_scope(app_db) as s:
        convs.create_conversation(s, sera, "kept until delete")

    at = new_app("pages/library.py")
    cards = [m.value for m in at.markdown if m.value.startswith("**")]
    assert cards == ["**Seraphina**", "**Bob**"]  # most recent activity (her conversation) first
    at.text_input(key="library_query").set_value("FOREST").run()
    assert [m.value for m in at.markdown if m.value.startswith("**")] == ["**Seraphina**"]
    assert any("English · 1 conversation ·" in c.value for c in at.caption)

    button(at, "", key=f"edit_{sera}").click().run()
    at.text_input[0].set_value("Seraphina the Healer")  # the editor replaces the grid and its search box
    at.text_area[0].set_value("New notes")
    button(at, "Save").click().run()
    with Session(app_db) as s:
        edited = s.get(Character, sera)
        assert (edited.name, edited.notes) == ("Seraphina the Healer", "New notes")
    button(at, "Back to the library").click().run()

    at.text_input(key="library_query").set_value("").run()
    button(at, "", key=f"dup_{sera}").click().run()
    with Session(app_db) as s:
        names = sorted(c.name for c in s.exec(select(Character)).all())
    assert names == ["Bob", "Seraphina the Healer", "Seraphina the Healer (copy)"]

    button(at, "", key=f"del_{sera}").click().run()
    assert any("with its images and its conversation" in m.value and "cannot be undone" in m.value for m in at.markdown)
    button(at, "", key="confirm_delete_yes").click().run()
    with Session(app_db) as s:
        assert s.get(Character, sera) is None
        assert convs.list_conversations(s, sera) == []
        assert len(s.exec(select(Character)).all()) == 2


# -- Chat -------------------------------------------------------------------------------------------
def test_chat_full_flow_survives_a_restart(app_env, app_db, neutral_png) -> None:
    character = seed_character(app_db, neutral_png)
    at = new_app("pages/chat.py", character=character)
    assert not at.exception
    # A new conversation opens with a greeting generated from the sheet, streamed and saved.
    (greeting,) = chat_texts(at)
    assert greeting[0] == "assistant" and greeting[1]
    conversation = int(at.query_params["conversation"])

    at.chat_input[0].set_value("Hello! Who are you?").run()
    texts = chat_texts(at)
    assert [r for r, _ in texts] == ["assistant", "user", "assistant"]
    assert texts[1][1] == "Hello! Who are you?" and texts[2][1]
    assert any("tokens/s" in c.value for c in at.caption)  # the stats caption
    first_reply = texts[2][1]

    button(at, "", key="regen_2").click().run()
    assert any(m.value == "2/2" for m in at.markdown)
    button(at, "", key="prev_2").click().run()
    assert chat_texts(at)[2][1] == first_reply and any(m.value == "1/2" for m in at.markdown)

    button(at, "", key="edit_1").click().run()
    edit_box = next(ta for ta in at.text_area if ta.value == "Hello! Who are you?")
    edit_box.set_value("Tell me about the forest.")
    next(b for b in at.button if b.label == "Save and resend").click().run()
    texts = chat_texts(at)
    assert texts[1][1] == "Tell me about the forest." and len(texts) == 3
    with Session(app_db) as s:
        assert convs.variant_counts(s, conversation)[2] == 3  # the replies to the old words stay, as alternatives

    at.chat_input[0].set_value("Second question").run()
    assert len(chat_texts(at)) == 5
    for turn in (4, 3):  # each asks first
        button(at, "", key=f"del_{turn}").click().run()
        button(at, "", key="confirm_message_delete_yes").click().run()
    assert len(chat_texts(at)) == 3

    at.slider[0].set_value(0.3)
    at.number_input[1].set_value(64)
    next(b for b in at.button if b.key and b.key.startswith("FormSubmitter:sampler_")).click().run()
    with Session(app_db) as s:
        saved = convs.get_conversation(s, conversation).settings
    assert saved["temperature"] == 0.3 and saved["max_new_tokens"] == 64

    before = chat_texts(at)
    restarted = new_app("pages/chat.py", character=character, conversation=conversation)
    assert chat_texts(restarted) == before
    assert restarted.slider[0].value == 0.3
    home = new_app()  # the model status on Home tells how the KV cache is being used
    assert any(c.value.startswith("KV cache:") and "reused" in c.value for c in home.caption)


def test_a_long_conversation_says_what_the_character_no_longer_sees(app_env, app_db, neutral_png, monkeypatch) -> None:
    monkeypatch.setenv("REFSHEET_CONTEXT_TOKENS", "1100")  # the tiny model's prefix alone is ~900 tokens
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    with session_scope(app_db) as s:
        convs.save_settings(s, int(at.query_params["conversation"]), {"temperature": 0, "max_new_tokens": 8})
    for i in range(4):
        at.chat_input[0].set_value(f"Message number {i}: " + "tell me more " * 4).run()
        assert not at.error
    notes = [c.value for c in at.caption if "left out of this reply" in c.value]
    assert notes and "the character and its sheets never are" in notes[0]
    assert len(chat_texts(at)) == 9  # the page still shows every message


def test_saved_greeting_and_alternates_open_a_conversation(app_env, app_db, neutral_png) -> None:
    character = seed_character(app_db, neutral_png, first_mes="Welcome, {{user}}!", alternate_greetings=["Hi!"])
    at = new_app("pages/chat.py", character=character)
    assert chat_texts(at) == [("assistant", "Welcome, you!")]
    assert any(m.value == "1/2" for m in at.markdown)
    button(at, "", key="next_0").click().run()
    assert chat_texts(at) == [("assistant", "Hi!")]


def test_conversations_new_rename_delete_and_deep_links(app_env, app_db, neutral_png) -> None:
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    first = int(at.query_params["conversation"])
    button(at, "New conversation").click().run()
    second = int(at.query_params["conversation"])
    assert second != first and chat_texts(at) == [("assistant", "Hello.")]

    at.text_input(key=f"title_{second}").set_value("Evening talk")
    button(at, "", key="rename").click().run()
    assert any(c.value == "Evening talk" for c in at.caption)

    linked = new_app("pages/chat.py", character=character, conversation=first)  # a deep link
    assert int(linked.query_params["conversation"]) == first

    button(at, "", key="delete_conversation").click().run()
    button(at, "", key="confirm_conv_delete_yes").click().run()
    with Session(app_db) as s:
        assert [c.id for c in convs.list_conversations(s, character)] == [first]


def test_bad_attachment_is_refused_and_the_text_kept(app_env, app_db, neutral_png) -> None:
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    at.chat_input[0].set_value("Look at my drawing")
    at.chat_input[0].upload("drawing.png", b"not an image at all", "image/png")
    at.run()
    assert any("back in the box" in w.value for w in at.warning)
    assert at.chat_input[0].proto.value == "Look at my drawing" and at.chat_input[0].proto.set_value  # to resend
    assert any("is not an image" in e.value for e in at.error)
    with Session(app_db) as s:
        assert s.exec(select(func.count(Message.id))).one() == 1  # only the greeting


def test_attached_image_reaches_the_model(app_env, app_db, neutral_png) -> None:
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    at.chat_input[0].set_value("What colour is this?")
    at.chat_input[0].upload("red.png", encode(Image.new("RGB", (40, 40), "red"), "PNG"), "image/png")
    at.run()
    with Session(app_db) as s:
        user, reply = convs.list_messages(s, int(at.query_params["conversation"]))[1:]
        assert len(user.attachment_ids) == 1
        # The model saw two images: the sheet and the attachment (4 soft tokens each in the tiny model).
        assert reply.stats["prompt_tokens"] > 0 and reply.status == "complete"


def test_user_text_is_never_html(app_env, app_db, neutral_png) -> None:
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    at.chat_input[0].set_value("<img src=x onerror=alert(1)> <b>hi</b>").run()
    user_bubble = at.chat_message[1]
    assert user_bubble.markdown[0].value == "\\<img src=x onerror=alert(1)> \\<b>hi\\</b>"  # shown as typed
    assert all(not md.proto.allow_html for m in at.chat_message for md in m.markdown)


def test_shown_text_cannot_make_the_browser_fetch_an_image(app_env, app_db, neutral_png) -> None:
    trap = "![pixel](https://tracker.invalid/p.png)"
    character = seed_character(app_db, neutral_png, name=f"Mira {trap}", first_mes=f"Hello {trap}")
    at = new_app("pages/chat.py", character=character)
    at.chat_input[0].set_value(f"Look {trap}").run()
    shown = [md.value for m in at.chat_message for md in m.markdown] + [t.value for t in at.title]
    shown += [c.value for c in at.caption]
    assert any("tracker.invalid" in v for v in shown) and not any("![" in v for v in shown)
    library = new_app("pages/library.py")
    assert not any("![" in md.value for md in library.markdown)


def test_ui_follows_the_browser_locale_and_switches(app_env, neutral_png, app_db) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60)
    at.context["locale"] = "zh-CN"
    at.run()
    assert at.title[0].value == "RefSheet Chat 角色设定图聊天"
    at.selectbox(key="ui_lang").set_value("en").run()
    assert at.title[0].value == "RefSheet Chat"


def test_first_time_user_without_a_model_is_told_what_to_do(app_env, app_db, neutral_png, monkeypatch) -> None:
    monkeypatch.setenv("REFSHEET_MODEL", "/models/not-downloaded-gemma")
    home = new_app()
    assert any("not loaded yet" in i.value for i in home.info)
    assert any(link.label == "Create a character" for link in home.get("page_link"))

    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    at.chat_input[0].set_value("Are you there?").run()
    assert not at.exception
    assert any("does not exist" in e.value and "REFSHEET_MODEL" in e.value for e in at.error)
    with Session(app_db) as s:  # the message was kept, ready for a reply once the model works
        texts = [m.text for m in convs.list_messages(s, int(at.query_params["conversation"]))]
    assert texts == ["Hello.", "Are you there?"]
    assert any(b.label == "Try loading the model again" for b in at.button)


def test_import_a_tavern_card_on_the_create_page(app_env, app_db, shared) -> None:
    card = (shared / "cards" / "default_Seraphina.png").read_bytes()
    at = new_app("pages/create.py")
    at.file_uploader(key="card_0").set_value(("default_Seraphina.png", card, "image/png")).run()
    assert any("Card “Seraphina” loaded" in s.value for s in at.success)
    assert at.text_input(key="name_0").value == "Seraphina"
    assert at.text_area(key="first_mes_0").value.startswith("*You wake with a start")
    button(at, "Create character").click().run()
    with Session(app_db) as s:
        (character,) = s.exec(select(Character)).all()
        assert character.creator == "OtisAlejandro" and character.character_book["entries"]
        assert chars.get_images(s, character.id)[0].width == 400  # the card picture became the main sheet
    library = new_app("pages/library.py")
    button(library, "", key=f"edit_{character.id}").click().run()
    assert any(e.label.startswith("Character book: 4 entries") for e in library.expander)
