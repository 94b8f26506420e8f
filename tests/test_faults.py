"""A model server that breaks, the way real ones and the proxies before them do: `tests.fault_proxy`
in front of the real `transformers serve`, one case per fault. What matters to the person: what is
stored (the reply's status and text, and why it failed, in words that say what to do), that Stop and
a silent server give the conversation back within seconds, and that the operator's log says what
broke (never the key or what anyone wrote)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.base.sampling import SamplerSettings
from core.base.settings import Settings
from core.model.backends.openai.backend import OpenAIBackend
from core.services import characters, conversations, turns
from core.services.access import LOCAL_USER
from storage.tables import MessageStatus
from tests.conftest import sheet_image
from tests.fault_proxy import Fault, FaultProxy, fault_proxy

pytestmark = pytest.mark.slow

STALL = 2.0  # seconds of silence mid-reply before a reply ends (REFSHEET_API_STALL_SECONDS)
KEY = "sk-PLANTED-fault-key-0123456789"
WORDS = "A secret the user wrote 7f3a"


@pytest.fixture
def proxy(openai_server: str) -> Iterator[FaultProxy]:
    with fault_proxy(openai_server, models_delay=3.0) as running:
        yield running


@pytest.fixture
def backend(proxy: FaultProxy, tiny_checkpoint: Path) -> OpenAIBackend:
    settings = Settings(backend="openai", api_base=proxy.base_url, api_model=str(tiny_checkpoint), api_key=KEY,
                        api_stall_seconds=STALL, api_timeout=20)  # fmt: skip
    connected = OpenAIBackend(settings)
    connected.prepare()  # connected, and asked once whether the model sees pictures: the faults hit replies
    return connected


@pytest.fixture
def chat(engine) -> int:
    made = characters.create(engine, LOCAL_USER, {"name": "Sera", "first_mes": "Hello."}, [sheet_image()])
    conversation = conversations.start(engine, LOCAL_USER, made.id).id
    conversations.save_sampler(engine, LOCAL_USER, conversation, SamplerSettings(max_new_tokens=40))
    turns.send(engine, LOCAL_USER, conversation, WORDS)
    return conversation


def reply(engine, backend, chat: int, stop: threading.Event | None = None, after_first=None):
    """Ask for a reply and read it to its end (or its failure); returns (chunks, the failure, the row)."""
    run = turns.reply(engine, LOCAL_USER, backend, chat, stop=stop)
    chunks, failure = [], None
    try:
        for chunk in run:
            chunks.append(chunk)
            if after_first is not None and len(chunks) == 1:
                after_first()
    except Exception as exc:  # noqa: BLE001 - what a page shows; the row keeps it too
        failure = exc
    finally:
        run.close()
    return chunks, failure, turns.story(engine, LOCAL_USER, chat)[-1]


def test_a_server_that_falls_silent_mid_reply_gives_the_conversation_back(engine, backend, proxy, chat, caplog):
    proxy.set_fault("chat", Fault.STALL_AFTER_FIRST)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="refsheet.remote"):
        chunks, _, row = reply(engine, backend, chat)
    took = time.monotonic() - started
    assert chunks and row.text == "".join(chunks)  # what came is kept…
    assert row.status == MessageStatus.PARTIAL and row.unfinished and not row.being_written  # …unfinished
    assert row.error is not None and row.error.key == "model.error.server_silent"
    assert "went silent" in row.error.render("en")  # (the bubble says the text is kept, with Continue)
    assert took < STALL + 8  # not REFSHEET_API_TIMEOUT's ten minutes
    exchange = proxy.last("chat")
    assert exchange.client_closed.wait(3), "the app kept the silent connection open"
    (logged,) = [r.getMessage() for r in caplog.records if "failed during a reply" in r.getMessage()]
    assert "server_silent" in logged and proxy.base_url in logged
    assert KEY not in caplog.text and WORDS not in caplog.text


def test_stop_during_a_silence_returns_within_two_seconds_and_hangs_up(engine, backend, proxy, chat) -> None:
    proxy.set_fault("chat", Fault.STALL_AFTER_FIRST)
    backend.settings = backend.settings.with_(api_stall_seconds=60)  # the watchdog would take a minute
    stop, stopped_at = threading.Event(), []

    def press_stop() -> None:
        def later() -> None:
            time.sleep(0.5)
            stopped_at.append(time.monotonic())
            stop.set()

        threading.Thread(target=later, daemon=True).start()

    _, failure, row = reply(engine, backend, chat, stop, after_first=press_stop)
    returned = time.monotonic()
    assert stopped_at and returned - stopped_at[0] < 2.0
    assert failure is None and row.status == MessageStatus.PARTIAL and row.stats["stopped"]
    exchange = proxy.last("chat")
    assert exchange.client_closed.wait(2), "Stop left the socket open"
    assert exchange.client_closed_at - stopped_at[0] < 2.0


def test_no_first_word_in_time_is_said_as_such(engine, backend, proxy, chat) -> None:
    proxy.set_fault("chat", Fault.STALL_BEFORE_FIRST)
    backend.settings = backend.settings.with_(api_timeout=3)
    _, _, row = reply(engine, backend, chat)
    assert row.status == MessageStatus.ERROR and row.error.key == "model.error.server_silent"
    assert proxy.last("chat").client_closed.wait(3)


def test_a_stream_that_ends_without_saying_it_is_finished_is_unfinished(engine, backend, proxy, chat) -> None:
    proxy.set_fault("chat", Fault.NO_FINISH)
    chunks, _, row = reply(engine, backend, chat)
    assert chunks and row.status == MessageStatus.PARTIAL and row.text == "".join(chunks)
    assert row.error.key == "model.error.server_incomplete" and "may be cut short" in row.error.render("en")
    assert not row.stats["stopped"]  # nobody stopped it: the caption must not say so


def test_a_reply_cut_by_its_length_is_unfinished_and_says_why(engine, backend, proxy, chat) -> None:
    proxy.set_fault("chat", Fault.FINISH_LENGTH)
    _, failure, row = reply(engine, backend, chat)
    assert failure is None and row.status == MessageStatus.PARTIAL and row.error is None
    assert row.stats["finish"] == "length" and not row.stats["stopped"]


def test_an_html_page_instead_of_a_stream_is_an_error_naming_what_came(engine, backend, proxy, chat) -> None:
    proxy.set_fault("chat", Fault.HTML_200)
    chunks, _, row = reply(engine, backend, chat)
    assert not chunks and row.status == MessageStatus.ERROR and row.error.key == "model.error.not_a_stream"
    said = row.error.render("en")
    assert "200" in said and "text/html" in said and "<" not in said  # the page's title, not its markup


@pytest.mark.parametrize(
    ("fault", "key", "words", "absent"),
    [
        (Fault.CUT_AFTER_FIRST, "model.error.server_cut", "was cut", "cannot be reached"),
        (Fault.MALFORMED_SSE, "model.error.malformed_stream", "cannot read", "cannot be reached"),
        (Fault.STATUS_500, "model.error.server_error", "failed (500)", "stopped"),
        (Fault.STATUS_502_HTML, "model.error.server_error", "502 Bad Gateway", "<html"),
        (Fault.STATUS_429, "model.error.rate_limited", "in 7 s", "60 s"),
        (Fault.STATUS_401, "model.error.unauthorized", "REFSHEET_API_KEY", KEY),
    ],
)
def test_each_failure_is_said_for_what_it_is(engine, backend, proxy, chat, fault, key, words, absent) -> None:
    proxy.set_fault("chat", fault)
    chunks, failure, row = reply(engine, backend, chat)
    assert failure is not None and row.error is not None and row.error.key == key, row.error
    said = row.error.render("en")
    assert words in said and absent not in said, said
    assert said.count("{") == 0 and len(said) < 600  # no raw JSON, twice or at all
    assert row.status == (MessageStatus.PARTIAL if chunks else MessageStatus.ERROR)


def test_a_date_retry_after_is_counted_in_seconds(engine, backend, proxy, chat) -> None:
    proxy.set_fault("chat", Fault.STATUS_429_DATE)
    _, _, row = reply(engine, backend, chat)
    seconds = int(row.error.params["seconds"])
    assert 80 <= seconds <= 95  # the HTTP date 90 s ahead, not the fallback


def test_a_reply_without_usage_says_its_counts_are_estimated(engine, backend, proxy, chat) -> None:
    proxy.set_fault("chat", Fault.NO_USAGE)
    _, failure, row = reply(engine, backend, chat)
    assert failure is None and row.stats["estimated"] and row.stats["prompt_tokens"] > 0


@pytest.mark.parametrize(
    ("fault", "key", "words"),
    [
        (Fault.MODELS_HTML_404, "no_api_here", "/v1"),
        (Fault.MODELS_404_JSON, "no_api_here", "/v1"),
        (Fault.MODELS_GARBAGE, "bad_models_list", "REFSHEET_API_BASE"),
    ],
)
def test_a_wrong_address_is_said_as_one(backend, proxy, fault, key, words) -> None:
    proxy.set_fault("models", fault)
    status = backend.server.check()  # what the background check (or a page's first look) finds
    assert status.state == "failed" and status.error.code == key, status.error
    assert words in status.error.message("en")


def test_an_address_without_v1_gets_the_right_advice(proxy, tiny_checkpoint: Path) -> None:
    """REFSHEET_API_BASE without /v1: not "no model called …", but where the API is."""
    root = proxy.base_url.removesuffix("/v1")
    status = OpenAIBackend(Settings(backend="openai", api_base=root, api_model=str(tiny_checkpoint))).status()
    assert status.state == "failed" and status.error.code == "no_api_here"
    assert f"{root}/v1" in status.error.message("en")


def test_a_slow_model_list_never_holds_up_a_page(backend, proxy) -> None:
    assert backend.status().state == "ready"  # the first answer, waited for once
    proxy.set_fault("models", Fault.MODELS_SLOW)
    backend.server._checked = (0.0, backend.server._checked[1])  # as if 30 s had passed
    started = time.monotonic()
    assert backend.status().state == "ready"  # the last answer at once; asked again in the background
    assert time.monotonic() - started < 0.5


def test_a_drafts_clock_ticks_while_the_server_thinks(backend, proxy) -> None:
    """Read the sheet against a server that takes its time before the first word: the phase's clock
    keeps counting (it froze at "…1 s" before)."""
    from core.services.draft import read_sheet

    proxy.set_fault("chat", Fault.STALL_BEFORE_FIRST)
    backend.settings = backend.settings.with_(api_timeout=3.5)
    seen: list[int] = []
    run = read_sheet(backend, [sheet_image()], "A knight.", "English",
                     on_progress=lambda phase: seen.append(phase.params.get("elapsed", -1)))  # fmt: skip
    with pytest.raises(Exception, match="went silent"):
        list(run)
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] >= 2, seen


@pytest.mark.browser
def test_stop_in_the_browser_during_a_silence_gives_the_page_back(tmp_path, tiny_checkpoint, proxy, shared) -> None:
    """The page's own Stop, while the server has gone silent after its first words: Streamlit acts on
    a click only when the page changes, so the reply's bubble keeps ticking; the page is back within
    seconds, the reply kept as unfinished, and the server's connection closed."""
    from playwright.sync_api import expect, sync_playwright

    from bench.servers import free_port
    from storage.db import make_engine, migrate
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, Server, _wait_idle, server_env

    env, _ = server_env(tmp_path, tiny_checkpoint)
    env.update(REFSHEET_BACKEND="openai", REFSHEET_API_BASE=proxy.base_url, REFSHEET_API_MODEL=str(tiny_checkpoint),
               REFSHEET_API_STALL_SECONDS="120")  # fmt: skip
    engine = make_engine(f"sqlite:///{Path(env['REFSHEET_DATA_DIR']) / 'refsheet.db'}")
    migrate(engine)
    character = characters.create(engine, LOCAL_USER, {"name": "Sera", "first_mes": "Hello."}, [sheet_image()]).id
    srv = Server(env, free_port(), tmp_path / "server.log")
    srv.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{srv.port}/chat?character={character}")
            expect(page.get_by_text("Hello.")).to_be_visible(timeout=60_000)
            _wait_idle(page)
            proxy.set_fault("chat", Fault.STALL_AFTER_FIRST)
            box = page.locator('[data-testid="stChatInputTextArea"]')
            box.fill("Tell me a long story.")
            box.press("Enter")
            expect(page.get_by_role("button", name="Stop")).to_be_visible(timeout=60_000)
            page.wait_for_timeout(3000)  # the first words came; the server is silent now
            pressed = time.monotonic()
            page.get_by_role("button", name="Stop").click()
            expect(page.get_by_role("button", name="Stop")).to_have_count(0, timeout=10_000)
            back = time.monotonic() - pressed
            expect(page.get_by_text("Unfinished", exact=False)).to_be_visible(timeout=10_000)
            browser.close()
        exchange = proxy.last("chat")
        assert back < 5, back
        assert exchange.client_closed.wait(5) and exchange.client_closed_at - pressed < 5
    finally:
        srv.kill()
        engine.dispose()
