"""Several windows and several replicas on one database: start-up migrations serialised, a readiness
check, stale pages refused, one reply at a time per conversation, and no traceback for users.

The "other window" is a second AppTest session (a second browser session of the same server) or the
services called directly, as another replica would; the start-up race is two real processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url
from sqlmodel import Session

import ui.navigation
import ui.server
from core.base.errors import Changed
from core.model.backend import ReplyRequest
from core.services import characters, conversations, turns
from core.services.users import LOCAL_USER
from storage import conversations as convs
from storage.db import head_revision, make_engine, migrate, open_database, redacted, schema_state
from storage.tables import Message, MessageStatus, Role
from tests.conftest import new_app
from tests.conftest import sheet_image as _image

CHANGED = "This conversation changed in another window — here it is now."


# -- start-up: two replicas at once on an empty database ------------------------------------------------
def _start_up(url: str, barrier, results) -> None:
    """What a replica does at start-up (`ui.server.lifespan`), released at the same instant as the other."""
    barrier.wait()
    try:
        open_database(url).dispose()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")


def _race(url: str) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_start_up, args=(url, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    return sorted(results.get(timeout=5) for _ in procs)


@pytest.mark.slow
def test_two_replicas_starting_together_on_an_empty_postgresql_both_succeed(postgres_server: str) -> None:
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    for _ in range(5):
        name = f"t_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        url = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
        try:
            assert _race(url) == ["ok", "ok"]
            engine = make_engine(url)
            assert schema_state(engine) == "ready"
            engine.dispose()
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.mark.slow
def test_two_replicas_starting_together_on_a_new_sqlite_file_both_succeed(tmp_path: Path) -> None:
    for i in range(5):
        url = f"sqlite:///{tmp_path / f'round{i}' / 'refsheet.db'}"
        assert _race(url) == ["ok", "ok"]
        engine = make_engine(url)
        assert schema_state(engine) == "ready"
        engine.dispose()


# -- readiness ----------------------------------------------------------------------------------------------
def test_readiness_says_whether_the_database_can_serve(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'refsheet.db'}")
    assert schema_state(engine) == "not_migrated"
    migrate(engine, "0005")
    assert schema_state(engine) == "not_migrated"  # an older schema: this version cannot serve it yet
    migrate(engine)
    assert schema_state(engine) == "ready" and head_revision()
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'from_a_later_version'")
    assert schema_state(engine) == "newer"
    engine.dispose()
    nowhere = make_engine("postgresql+psycopg://refsheet@127.0.0.1:9/none?connect_timeout=2")
    assert schema_state(nowhere) == "unreachable"


# -- no traceback for users -----------------------------------------------------------------------------------
def test_an_unexpected_error_shows_an_error_id_and_no_traceback(app_env, app_db, monkeypatch, caplog) -> None:
    characters.create(app_db, LOCAL_USER, {"name": "Mira"}, [_image()])

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom in /srv/secret/path.py")

    monkeypatch.setattr(characters, "names", broken)
    monkeypatch.setattr(ui.navigation, "unexpected", ui.server.unexpected)  # as in the app, not as under test
    at = new_app("pages/chat.py")
    assert not at.exception  # Streamlit's own display (a traceback, file paths) is never reached
    shown = " ".join(e.value for e in at.error)
    assert "Something went wrong on our side. Error id" in shown and "/srv/secret" not in shown
    error_id = shown.split("Error id ")[1].split(":")[0]
    logged = [r for r in caplog.records if r.name == "refsheet.server" and error_id in r.getMessage()]
    assert logged and "boom in /srv/secret/path.py" in str(logged[0].exc_info[1])  # the operator has it all


# -- stale pages ----------------------------------------------------------------------------------------------
@pytest.fixture
def talk(app_env, app_db) -> Iterator[tuple[int, int]]:
    """A character and a conversation holding one exchange: (character, conversation)."""
    mira = characters.create(app_db, LOCAL_USER, {"name": "Mira"}, [_image()]).id
    chat = conversations.start(app_db, LOCAL_USER, mira).id
    with Session(app_db) as session:
        convs.append_message(session, chat, Role.USER, "Hello there.")
        convs.append_message(session, chat, Role.ASSISTANT, "Hello, traveller.")
        session.commit()
    yield mira, chat


def _rows(engine, chat: int) -> list[tuple[int, int, str, str, bool]]:
    with Session(engine) as session:
        return [(m.turn, m.variant, m.role, m.text, m.chosen) for m in convs.all_messages(session, chat)]


def _another_window_adds(engine, chat: int) -> None:
    """Another window (or replica) moves the conversation on: a message and its reply."""
    sent = turns.send(engine, LOCAL_USER, chat, "Tell me about the pier.")
    with Session(engine) as session:
        convs.append_message(session, chat, Role.ASSISTANT, "It creaks at night.")
        session.commit()
    assert not sent.moved_on  # the services were not told what any page showed


def test_a_stale_regenerate_is_refused_and_changes_nothing(talk, app_db) -> None:
    mira, chat = talk
    at = new_app("pages/chat.py", character=mira, conversation=chat)
    _another_window_adds(app_db, chat)
    before = _rows(app_db, chat)
    next(b for b in at.button if b.key == "regen_1").click().run()  # the old last reply, on the stale page
    assert not at.exception
    assert CHANGED in [e.value for e in at.error]
    assert _rows(app_db, chat) == before  # no new alternative of an earlier turn under later ones
    assert [m.markdown[0].value for m in at.chat_message if m.markdown][-1] == "It creaks at night."  # here it is now


def test_a_stale_edit_and_a_stale_delete_are_refused(talk, app_db) -> None:
    mira, chat = talk
    at = new_app("pages/chat.py", character=mira, conversation=chat)
    next(b for b in at.button if b.key == "edit_0").click().run()
    at.text_area[0].input("Goodbye.")
    other = new_app("pages/chat.py", character=mira, conversation=chat)  # a second window on the same server
    next(b for b in other.button if b.key == "del_1").click().run()
    next(b for b in other.button if b.key == "confirm_message_delete_yes").click().run()
    after_other = _rows(app_db, chat)
    assert [r[3] for r in after_other] == ["Hello there."]  # the other window deleted the reply
    next(b for b in at.button if b.label == "Save and resend").click().run()
    assert CHANGED in [e.value for e in at.error] and _rows(app_db, chat) == after_other

    _another_window_adds(app_db, chat)
    at = new_app("pages/chat.py", character=mira, conversation=chat)
    before = _rows(app_db, chat)
    last = before[-1][0]
    next(b for b in at.button if b.key == f"del_{last}").click().run()
    turns.send(app_db, LOCAL_USER, chat, "One more thing.")  # meanwhile, elsewhere
    moved = _rows(app_db, chat)
    assert len(moved) == len(before) + 1
    next(b for b in at.button if b.key == "confirm_message_delete_yes").click().run()
    assert CHANGED in [e.value for e in at.error] and _rows(app_db, chat) == moved


def test_an_up_to_date_page_acts_as_before(talk, app_db) -> None:
    mira, chat = talk
    at = new_app("pages/chat.py", character=mira, conversation=chat)
    next(b for b in at.button if b.key == "del_1").click().run()
    next(b for b in at.button if b.key == "confirm_message_delete_yes").click().run()
    assert not at.error and [r[3] for r in _rows(app_db, chat)] == ["Hello there."]


def test_the_services_refuse_what_a_stale_view_asks(talk, app_db, backend) -> None:
    _, chat = talk
    seen = turns.Seen.of(turns.story(app_db, LOCAL_USER, chat))
    _another_window_adds(app_db, chat)
    before = _rows(app_db, chat)
    for act in (
        lambda: turns.reply(app_db, LOCAL_USER, backend, chat, regenerate_turn=1, seen=seen),
        lambda: turns.reply(app_db, LOCAL_USER, backend, chat, continue_turn=1, seen=seen),
        lambda: turns.reply(app_db, LOCAL_USER, backend, chat, seen=seen),
        lambda: turns.edit(app_db, LOCAL_USER, chat, 0, "Changed words.", seen),
        lambda: turns.delete(app_db, LOCAL_USER, chat, 1, seen),
        lambda: turns.choose(app_db, LOCAL_USER, chat, 1, 0, seen),  # the pager of a stale page
    ):
        with pytest.raises(Changed):
            act()
        assert _rows(app_db, chat) == before
    sent = turns.send(app_db, LOCAL_USER, chat, "Late, but mine.", seen=seen)  # a message is never refused
    assert sent.moved_on and _rows(app_db, chat)[-1][3] == "Late, but mine."
    now = turns.seen_now(app_db, LOCAL_USER, chat)
    assert not turns.send(app_db, LOCAL_USER, chat, "Up to date.", seen=now).moved_on


# -- one reply at a time ----------------------------------------------------------------------------------------
class Recording:
    """The real backend, with each request it was asked kept, and a pause per chunk so two replies
    really overlap (the tiny model writes a reply in milliseconds)."""

    def __init__(self, backend) -> None:
        self.backend, self.requests = backend, []

    def stream(self, request: ReplyRequest, stop=None, on_progress=None):
        self.requests.append(request)
        inner = self.backend.stream(request, stop, on_progress)

        class Slow:
            stats = inner.stats

            def __iter__(self):
                for chunk in inner:
                    time.sleep(0.02)
                    yield chunk

            def close(self):
                inner.close()

        return Slow()


def test_two_sends_at_once_are_answered_in_turn_each_reply_after_its_own_message(app_env, app_db, backend) -> None:
    mira = characters.create(app_db, LOCAL_USER, {"name": "Mira"}, [_image()]).id
    chat = conversations.start(app_db, LOCAL_USER, mira).id
    recording = Recording(backend)
    both_sent = threading.Barrier(2)
    waits: list[list[str]] = [[], []]
    failures: list[BaseException] = []

    def window(i: int, words: str) -> None:
        try:
            sent = turns.send(app_db, LOCAL_USER, chat, words, keep_reply=True)  # as the chat page sends
            both_sent.wait(10)  # both messages are stored before either reply starts: the race of the issue
            run = turns.reply(app_db, LOCAL_USER, recording, chat, into=sent.reply_id,
                              on_progress=lambda phase: waits[i].append(phase.key))  # fmt: skip
            for _ in run:
                pass
        except BaseException as exc:  # noqa: BLE001 - shown by the test
            failures.append(exc)

    threads = [threading.Thread(target=window, args=(i, w)) for i, w in enumerate(["First question?", "Second one?"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    story = turns.story(app_db, LOCAL_USER, chat)
    assert [b.role for b in story] == [Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert all(b.status == MessageStatus.COMPLETE for b in story)
    first, second = sorted(recording.requests, key=lambda r: len(r.history))
    assert first.history[-1].text == story[0].text  # each reply's prompt ends in its own message…
    assert second.history[-1].text == story[2].text
    assert [t.text for t in second.history[:2]] == [story[0].text, story[1].text]  # …after the whole first reply
    assert "progress.earlier_reply" in waits[0] + waits[1]  # one of them waited, and said so


def test_a_reply_stopped_before_its_first_word_leaves_no_empty_reply(talk, app_db, backend) -> None:
    _, chat = talk
    sent = turns.send(app_db, LOCAL_USER, chat, "Are you there?", keep_reply=True)
    run = turns.reply(app_db, LOCAL_USER, backend, chat, into=sent.reply_id)
    run.close()  # Stop, or the tab closed, while it waited for its turn: nothing was written
    story = turns.story(app_db, LOCAL_USER, chat)
    assert [b.text for b in story][-1] == "Are you there?" and turns.awaiting_reply(story)  # "Get a reply" again
    regenerated = turns.reply(app_db, LOCAL_USER, backend, chat, regenerate_turn=1)
    regenerated.close()
    assert [b.text for b in turns.story(app_db, LOCAL_USER, chat)][1] == "Hello, traveller."  # the old one is back


def test_an_empty_row_never_reaches_the_prompt(talk, app_db) -> None:
    _, chat = talk
    sent = turns.send(app_db, LOCAL_USER, chat, "First?", keep_reply=True)  # its reply row, still empty
    turns.send(app_db, LOCAL_USER, chat, "Second?")
    history = turns.request_for(app_db, LOCAL_USER, chat).history
    assert [t.text for t in history] == ["Hello there.", "Hello, traveller.", "First?", "Second?"]
    assert sent.reply_id is not None


def test_a_kept_reply_row_stays_claimed_while_its_writer_gets_ready(talk, app_db) -> None:
    """The model may take longer to load than a claim lasts: the page renews it meanwhile, so a
    message sent from another window waits for this reply instead of writing past it."""
    _, chat = talk
    sent = turns.send(app_db, LOCAL_USER, chat, "Slow model?", keep_reply=True)
    with Session(app_db) as session:  # as if the model had been loading for a minute
        row = session.get(Message, sent.reply_id)
        row.updated_at = row.updated_at - timedelta(minutes=1)
        session.add(row)
        session.commit()
    later = turns.send(app_db, LOCAL_USER, chat, "From elsewhere", keep_reply=True)
    since = datetime.now(UTC) - turns.CLAIM_LEASE
    with Session(app_db) as session:
        assert not convs.writing_before(session, chat, 5, since)  # expired: the other reply would not wait
    turns.renew(app_db, LOCAL_USER, chat, sent.reply_id)
    with Session(app_db) as session:
        assert convs.writing_before(session, chat, 5, since)  # renewed: it waits
    assert later.turn > sent.turn


def test_a_replica_that_started_before_its_database_becomes_ready_when_it_comes_up(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data folder should be")  # the database cannot be opened yet
    monkeypatch.setenv("REFSHEET_DATA_DIR", str(blocker))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(ui.server, "RETRY_SECONDS", 0.2)
    starting = threading.Thread(target=ui.server._prepare, daemon=True)
    starting.start()
    time.sleep(0.5)
    assert starting.is_alive()  # still trying
    blocker.unlink()  # the database becomes reachable
    starting.join(20)
    assert not starting.is_alive()
    engine = make_engine(f"sqlite:///{blocker / 'refsheet.db'}")
    assert schema_state(engine) == "ready"  # migrated without any page view
    engine.dispose()


def test_a_password_with_url_escapes_migrates_and_stays_out_of_messages(postgres_url: str) -> None:
    password = "S3cr/p@ss%w#rd"
    url = make_url(postgres_url).set(password=password)  # trust auth: any password is accepted
    text = url.render_as_string(hide_password=False)
    assert "%" in text
    engine = open_database(text)  # Alembic is handed the engine, never a URL it would read `%` in
    assert schema_state(engine) == "ready"
    engine.dispose()
    said = f"connection to {text} failed for {password}"
    assert password not in redacted(said, text) and "S3cr%2Fp%40ss%25w%23rd" not in redacted(said, text)


def test_ready_answers_under_the_base_path_too() -> None:
    from streamlit import config

    before = config.get_option("server.baseUrlPath")
    try:
        config.set_option("server.baseUrlPath", "/refsheet/")
        assert [r.path for r in ui.server.routes()] == ["/ready", "/refsheet/ready"]
        config.set_option("server.baseUrlPath", "")
        assert [r.path for r in ui.server.routes()] == ["/ready"]
    finally:
        config.set_option("server.baseUrlPath", before)
