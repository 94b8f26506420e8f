"""A picture damaged in storage (written by another program, a disk fault, a restore from before full
checks) breaks nothing: Library and Chat draw a placeholder naming it, Edit and Delete stay within
reach, and a reply says which picture to replace instead of failing with a decoder's error."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.conftest import new_app, sheet_image

pytestmark = pytest.mark.slow


def damage(db, character_id: int) -> None:
    """Cut every stored picture of the character (thumbnails included) in half, as a bad disk would."""
    with db.begin() as conn:
        ids = [
            r[0] for r in conn.execute(text("SELECT id FROM sheetimage WHERE character_id = :c"), {"c": character_id})
        ]
        for image_id in ids:
            for table, column, key in (("sheetimage", "thumbnail", "id"), ("sheetimagebytes", "data", "image_id")):
                (blob,) = conn.execute(text(f"SELECT {column} FROM {table} WHERE {key} = :i"), {"i": image_id}).one()
                conn.execute(text(f"UPDATE {table} SET {column} = :b WHERE {key} = :i"),
                             {"b": blob[: len(blob) // 2], "i": image_id})  # fmt: skip


def test_library_and_chat_still_work_around_a_damaged_picture(app_env, app_db) -> None:
    from core.services import characters, conversations, turns
    from core.services.users import LOCAL_USER

    broken = characters.create(app_db, LOCAL_USER, {"name": "Broken", "first_mes": "Hello."}, [sheet_image("red")])
    fine = characters.create(app_db, LOCAL_USER, {"name": "Fine"}, [sheet_image("blue")])
    chat = conversations.start(app_db, LOCAL_USER, broken.id)
    turns.send(app_db, LOCAL_USER, chat.id, "Still here?")
    damage(app_db, broken.id)

    at = new_app("pages/library.py")
    assert not at.exception, [e.value for e in at.exception]
    assert any("Broken" in w.value and "damaged" in w.value for w in at.warning)  # a placeholder, named
    assert {b.key for b in at.button} >= {f"edit_{broken.id}", f"del_{broken.id}", f"del_{fine.id}"}
    next(b for b in at.button if b.key == f"edit_{broken.id}").click().run()
    assert not at.exception and any("red.png" in w.value and "damaged" in w.value for w in at.warning)

    at = new_app("pages/chat.py", character=broken.id, conversation=chat.id)
    assert not at.exception, [e.value for e in at.exception]
    assert any("damaged" in w.value for w in at.warning)
    assert [m.markdown[0].value for m in at.chat_message] == ["Hello.", "Still here?"]

    at = new_app()  # Home's Recent shows the conversation with a placeholder for its thumbnail
    assert not at.exception and any("Broken" in m.value for m in at.markdown)

    at = new_app("pages/library.py")
    next(b for b in at.button if b.key == f"del_{broken.id}").click().run()
    next(b for b in at.button if b.key == "confirm_delete_yes").click().run()
    assert [s.name for s in characters.summaries(app_db, LOCAL_USER)] == ["Fine"]


def test_a_reply_names_the_damaged_picture(engine, backend) -> None:
    from core.services import characters, conversations, turns
    from core.services.users import LOCAL_USER

    character = characters.create(engine, LOCAL_USER, {"name": "Broken"}, [sheet_image("red")])
    chat = conversations.start(engine, LOCAL_USER, character.id)
    turns.send(engine, LOCAL_USER, chat.id, "Hello")
    damage(engine, character.id)
    backend.prepare()
    with pytest.raises(Exception) as failed:  # whatever the engine relays, it names the picture
        list(turns.reply(engine, LOCAL_USER, backend, chat.id))
    assert "red.png" in str(failed.value) and "damaged" in str(failed.value)
    (_, reply) = turns.story(engine, LOCAL_USER, chat.id)
    assert reply.status == "error" and reply.error is not None and reply.error.key == "image.damaged_stored"
    assert reply.error.params["name"] == "red.png"
