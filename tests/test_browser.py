"""A real browser against a real server: Playwright drives Debian's Chromium at `streamlit run Home.py`.

Creates a character from the shared sheet, chats, kills the server process, restarts it, and finds
the conversation intact. An audit hook inside the server records every outgoing connection and
name lookup: there must be none beyond loopback. Screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest

from bench.servers import free_port, wait_for_http
from core.formats.archive import read_zip
from core.formats.cards import read_card
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "test-artifacts" / "screenshots"
TIMEZONE = "Asia/Shanghai"  # UTC+8 all year: a wrong zone is off by hours

# Loaded by the server's interpreter through PYTHONPATH: logs any connection that leaves loopback.
AUDIT_HOOK = """
import json, os, sys
_log = os.environ["REFSHEET_NET_LOG"]
_ok = {"127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "", None}
def _hook(event, args):
    if event == "socket.connect":
        if not isinstance(args[1], tuple):
            return  # a Unix socket path
        host = args[1][0]
    elif event == "socket.getaddrinfo":
        host = args[0].decode() if isinstance(args[0], bytes) else args[0]
    else:
        return
    if host in _ok or str(host).startswith("127."):
        return
    with open(_log, "a") as fh:
        fh.write(json.dumps({"event": event, "host": str(host)}) + "\\n")
sys.addaudithook(_hook)
"""


def _browser_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


if not _browser_available():
    if os.environ.get("REFSHEET_REQUIRE_BROWSER"):
        pytest.fail("Chromium or Playwright missing, and CI requires the browser test", pytrace=False)
    pytest.skip("needs Debian's chromium (apt-get install -y chromium) and playwright", allow_module_level=True)


class Server:
    """`streamlit run Home.py` as a child process, started and killed like a real deployment."""

    def __init__(self, env: dict[str, str], port: int, log: Path, extra: tuple[str, ...] = ()) -> None:
        self.env, self.port, self.log, self.extra = env, port, log, extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "Home.py",
                "--server.port",
                str(self.port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--server.fileWatcherType",
                "none",
                *self.extra,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
        )
        wait_for_http(f"http://127.0.0.1:{self.port}/_stcore/health", self.proc, self.log, 60)  # or its log

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # no clean shutdown: as if the machine lost power
            self.proc.wait(10)


def server_env(tmp_path: Path, tiny_checkpoint: Path) -> tuple[dict[str, str], Path]:
    """The environment of an app server under test: the tiny model, a fresh data directory, and the
    audit hook that records any connection beyond loopback (into the returned log)."""
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    net_log = tmp_path / "network.jsonl"
    return {
        **os.environ,
        "PYTHONPATH": f"{hook_dir}{os.pathsep}{ROOT}",
        "REFSHEET_NET_LOG": str(net_log),
        "REFSHEET_DATA_DIR": str(tmp_path / "data"),
        "REFSHEET_MODEL": str(tiny_checkpoint),
        "REFSHEET_QUANTIZATION": "none",
        "HF_HUB_OFFLINE": "1",
    }, net_log


@pytest.fixture
def server(tmp_path: Path, tiny_checkpoint: Path):
    env, net_log = server_env(tmp_path, tiny_checkpoint)
    srv = Server(env, free_port(), tmp_path / "server.log")
    srv.start()
    yield srv, net_log
    srv.kill()


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _wait_idle(page) -> None:
    """Until Streamlit has finished running the script (reruns included)."""
    for _ in range(2):  # a reply ends with a rerun: wait out both runs
        page.wait_for_timeout(400)
        page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=120_000)


def _messages(page) -> list[str]:
    return [m.inner_text() for m in page.locator('[data-testid="stChatMessage"]').all()]


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]


def _seed(data_dir: Path, png: bytes, name: str, notes: str = "", **profile) -> int:
    """A character stored straight into the server's database (as an earlier session would have)."""
    from core.base.sheets import prepare_image
    from core.services import characters
    from core.services.users import LOCAL_USER
    from storage.db import make_engine, migrate

    engine = make_engine(f"sqlite:///{data_dir / 'refsheet.db'}")
    migrate(engine)
    made = characters.create(engine, LOCAL_USER, {"name": name, "notes": notes, **profile}, [prepare_image(png)])
    engine.dispose()
    return made.id


def test_create_chat_restart_and_nothing_leaves_loopback(server, shared: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    srv, net_log = server
    url = f"http://127.0.0.1:{srv.port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id=TIMEZONE)
        # The page too may reach nothing beyond loopback: such requests are recorded and never sent.
        outside: list[str] = []

        def guard(route) -> None:
            if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", guard)
        page.goto(url)
        expect(page.get_by_role("heading", name="RefSheet Chat")).to_be_visible(timeout=60_000)
        _wait_idle(page)
        _shot(page, "home-empty")

        page.get_by_role("link", name="Create a character").first.click()
        expect(page.get_by_role("heading", name="Create a character")).to_be_visible(timeout=30_000)
        main_sheet = page.get_by_role("region", name="Main reference sheet (required)")
        main_sheet.locator('input[type="file"]').set_input_files(str(shared / "images" / "seraphina_neutral.png"))
        expect(page.locator('[data-testid="stImage"]').first).to_be_visible(timeout=30_000)
        page.get_by_label("Name", exact=True).fill("Seraphina")
        page.get_by_label("Notes", exact=True).fill("Guardian of the forest glade.")
        _wait_idle(page)
        _shot(page, "create")
        page.get_by_role("button", name="Create character").click()
        expect(page.get_by_text("Seraphina is ready.")).to_be_visible(timeout=30_000)

        page.get_by_role("link", name="Start chatting").click()
        expect(page.get_by_text("tokens/s")).to_be_visible(timeout=120_000)  # the greeting has finished
        _wait_idle(page)
        chat_input = page.locator('[data-testid="stChatInputTextArea"]')
        chat_input.fill("Hello! <b>not bold</b> ![pixel](https://tracker.invalid/p.png)")
        chat_input.press("Enter")
        expect(page.locator('[data-testid="stChatMessage"]')).to_have_count(3, timeout=120_000)
        expect(page.get_by_role("button", name="Regenerate")).to_have_count(1, timeout=120_000)  # reply done
        _wait_idle(page)
        before = _messages(page)
        assert "Unfinished" not in "".join(before)
        assert "Hello! <b>not bold</b>" in before[1]  # shown as text, not turned into HTML
        assert before[2].strip()  # the streamed reply
        chat_url = page.url
        assert "character=" in chat_url and "conversation=" in chat_url
        _shot(page, "chat")

        srv.kill()
        srv.start()
        page.goto(chat_url)
        expect(page.locator('[data-testid="stChatMessage"]')).to_have_count(3, timeout=60_000)
        _wait_idle(page)
        assert _messages(page) == before
        _shot(page, "chat-after-restart")

        page.goto(f"{url}/library")
        expect(page.get_by_role("heading", name="Character library")).to_be_visible(timeout=30_000)
        _wait_idle(page)
        _shot(page, "library")
        # Times show in the browser's zone, not the server's UTC.
        meta = page.get_by_text("1 conversation ·").inner_text()
        shown = datetime.strptime(re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", meta).group(), "%Y-%m-%d %H:%M")
        local_now = datetime.now(ZoneInfo(TIMEZONE)).replace(tzinfo=None)
        assert abs((local_now - shown).total_seconds()) < 600, (meta, local_now)
        # Export the character as a Tavern card: the file a user downloads reads back as that character.
        page.get_by_role("button", name="Edit").first.click()
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Export character card (PNG)").click()
        exported = read_card(Path(download.value.path()).read_bytes(), "exported.png")
        assert exported.data["name"] == "Seraphina" and exported.image
        page.goto(url)
        expect(page.get_by_role("link", name="Continue").first).to_be_visible(timeout=30_000)
        _wait_idle(page)
        _shot(page, "home")
        browser.close()

    leaks = [json.loads(line) for line in net_log.read_text().splitlines()] if net_log.exists() else []
    assert leaks == [], f"the server reached beyond loopback: {leaks}"
    assert outside == [], f"the page asked for something beyond loopback: {outside}"


def _seed_long_chat(data_dir: Path, png: bytes) -> tuple[int, int]:
    """A character without a saved greeting, and a conversation with her of eight messages."""
    from core.services import conversations, turns
    from core.services.users import LOCAL_USER
    from storage import conversations as convs
    from storage.db import make_engine, session_scope
    from storage.tables import Role

    mira = _seed(data_dir, png, "Mira", "No greeting saved")
    engine = make_engine(f"sqlite:///{data_dir / 'refsheet.db'}")
    chat = conversations.start(engine, LOCAL_USER, mira).id
    with session_scope(engine) as s:
        for i in range(8):
            convs.append_message(s, chat, Role.USER if i % 2 else Role.ASSISTANT, f"Old message {i}")
    assert len(turns.story(engine, LOCAL_USER, chat)) == 8
    engine.dispose()
    return mira, chat


def test_what_a_new_user_meets(server, shared: Path, tmp_path: Path) -> None:
    """Issue 11 in a real browser: the language holds across pages, an oversized sheet is named with
    its size, the waits are explained, two same-named characters keep their own chats, cards line up."""
    from playwright.sync_api import expect, sync_playwright
    from sqlmodel import Session

    from storage import conversations as convs
    from storage.db import make_engine

    srv, net_log = server
    url = f"http://127.0.0.1:{srv.port}"
    data = Path(srv.env["REFSHEET_DATA_DIR"])
    neutral = (shared / "images" / "seraphina_neutral.png").read_bytes()
    joy = (shared / "images" / "seraphina_joy.png").read_bytes()
    first = _seed(data, neutral, "Seraphina", "The forest guardian", first_mes="Hello from the first.")
    second = _seed(data, joy, "Seraphina", "My own version, in a red dress with a much longer note", first_mes="Hi.")
    mira, long_chat = _seed_long_chat(data, neutral)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")

        # 3: 简体中文 chosen once holds on every page.
        page.goto(url)
        expect(page.get_by_role("heading", name="RefSheet Chat")).to_be_visible(timeout=60_000)
        page.get_by_label("Language").click()
        page.get_by_role("option", name="简体中文").click()
        expect(page.get_by_role("heading", name="RefSheet Chat 角色设定图聊天")).to_be_visible(timeout=30_000)
        page.get_by_role("link", name="角色库").first.click()
        expect(page.get_by_role("heading", name="角色库")).to_be_visible(timeout=30_000)
        page.get_by_role("link", name="创建").first.click()
        expect(page.get_by_role("heading", name="创建角色")).to_be_visible(timeout=30_000)
        page.get_by_label("界面语言").click()
        page.get_by_role("option", name="English").click()
        expect(page.get_by_role("heading", name="Create a character")).to_be_visible(timeout=30_000)

        # 10: a 27 MB sheet reaches the app, which says how large it is and what the limit is.
        big = tmp_path / "big.png"
        big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(27 * 2**20))
        sheet_box = page.get_by_role("region", name="Main reference sheet (required)")
        sheet_box.locator('input[type="file"]').set_input_files(str(big))
        expect(page.get_by_text("“big.png” is 27 MB; the limit is 20 MB")).to_be_visible(timeout=60_000)

        # 15: the library's cards of one row are the same height, and same names can be told apart.
        page.goto(f"{url}/library")
        expect(page.get_by_text("The forest guardian")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("My own version, in a red dress")).to_be_visible()
        _wait_idle(page)
        heights = page.eval_on_selector_all(  # the bordered blocks: one card each
            '[data-testid="stVerticalBlock"]',
            """els => els.filter(e => getComputedStyle(e).borderTopWidth !== "0px" && e.innerText.includes("Seraphina"))
                        .map(e => Math.round(e.getBoundingClientRect().height))""",
        )
        assert len(heights) == 2 and len(set(heights)) == 1, heights
        _shot(page, "library-same-names")

        # 1: "Chat" on the second Seraphina talks to the second Seraphina, and nothing goes to the first.
        page.locator(f'a[href$="chat?character={second}"]').click()
        expect(page.get_by_text("Hi.", exact=True)).to_be_visible(timeout=60_000)
        # 5: the first reply loads the model, saying so; nothing stale stays once it is loaded.
        chat_input = page.locator('[data-testid="stChatInputTextArea"]')
        chat_input.fill("Which one are you?")
        chat_input.press("Enter")
        expect(page.get_by_text("Loading the model")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("button", name="Regenerate")).to_have_count(1, timeout=120_000)
        _wait_idle(page)
        assert f"character={second}" in page.url
        expect(page.get_by_text("not loaded yet")).to_have_count(0)
        expect(page.get_by_text("Model ready")).to_have_count(1)
        engine = make_engine(f"sqlite:///{data / 'refsheet.db'}")
        with Session(engine) as s:
            assert convs.list_conversations(s, first) == []
            (mine,) = convs.list_conversations(s, second)
            assert [m.text for m in convs.list_messages(s, mine.id)][:2] == ["Hi.", "Which one are you?"]
            convs.save_settings(s, mine.id, {"temperature": 0, "max_new_tokens": 2500})  # a long reply next
            s.commit()
        engine.dispose()

        # 5: while one user's long reply is written, another one is told they wait, and for how long.
        chat_input.fill("Tell me a very long story.")
        chat_input.press("Enter")
        expect(page.get_by_role("button", name="Stop")).to_be_visible(timeout=60_000)
        other = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900}).new_page()
        other.goto(f"{url}/chat?character={first}")
        expect(other.get_by_text("Hello from the first.")).to_be_visible(timeout=60_000)
        other_input = other.locator('[data-testid="stChatInputTextArea"]')
        other_input.fill("Are you free?")
        other_input.press("Enter")
        waiting = other.get_by_text(re.compile(r"Waiting for the model: 1 reply\(ies\) ahead of yours · \d+ s"))
        expect(waiting).to_be_visible(timeout=30_000)
        _shot(other, "waiting-in-the-queue")
        page.get_by_role("button", name="Stop").click()  # the first user stops; the second is served
        expect(other.get_by_role("button", name="Regenerate")).to_have_count(1, timeout=120_000)

        # 6: "New conversation" clears the old one from the screen at once and streams the greeting.
        page.goto(f"{url}/chat?character={mira}&conversation={long_chat}")
        expect(page.locator('[data-testid="stChatMessage"]')).to_have_count(8, timeout=60_000)
        _wait_idle(page)
        page.get_by_role("button", name="New conversation").click()
        expect(page.get_by_role("button", name="Stop")).to_be_visible(timeout=30_000)
        shown = page.locator('[data-testid="stChatMessage"]')
        assert shown.count() == 1, [m.inner_text()[:40] for m in shown.all()]  # only the greeting being written
        expect(page.locator('[data-stale="true"] [data-testid="stChatMessage"]')).to_have_count(0)
        browser.close()

    leaks = [json.loads(line) for line in net_log.read_text().splitlines()] if net_log.exists() else []
    assert leaks == [], f"the server reached beyond loopback: {leaks}"


def test_launched_as_the_readme_says_it_reaches_nothing_beyond_loopback(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """`streamlit run Home.py` and nothing else (the config in .streamlit/config.toml decides), opened
    from 127.0.0.1 and from another loopback address (another origin, as a LAN address would be): no
    connection or name lookup leaves loopback, at start-up or when the pages connect."""
    from playwright.sync_api import expect, sync_playwright

    env, net_log = server_env(tmp_path, tiny_checkpoint)
    log = tmp_path / "server.log"
    streamlit = Path(sys.executable).with_name("streamlit")
    proc = subprocess.Popen([str(streamlit), "run", "Home.py"], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.time() + 60
        while not (found := re.search(r"URL: http://localhost:(\d+)", log.read_text())):
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.3)
        port = int(found.group(1))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for host in ("127.0.0.1", "127.0.0.2"):
                page = browser.new_page()
                page.goto(f"http://{host}:{port}/")
                expect(page.get_by_role("heading", name="RefSheet Chat")).to_be_visible(timeout=60_000)
                _wait_idle(page)
                page.goto(f"http://{host}:{port}/library")
                expect(page.get_by_role("heading", name="Character library")).to_be_visible(timeout=60_000)
            browser.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert "External URL" not in log.read_text() and "Network URL" not in log.read_text()
    leaks = [json.loads(line) for line in net_log.read_text().splitlines()] if net_log.exists() else []
    assert leaks == [], f"the server reached beyond loopback: {leaks}"


PAYLOADS = [
    "<script>window.__pwned = 'script'</script>",
    "<img src=x onerror=\"window.__pwned = 'img'; alert(1)\">",
    "<svg onload=\"window.__pwned = 'svg'\"></svg>",
    "[a link](javascript:window.__pwned='md-link')",
    "<a href=\"javascript:window.__pwned='a'\">a</a>",
    "<iframe srcdoc=\"<script>parent.__pwned='iframe'</script>\"></iframe>",
]


def test_nothing_a_user_or_card_writes_runs_in_the_browser(server, shared: Path) -> None:
    """Script, event-handler and javascript: payloads in a name, notes, card fields, a lore entry, a
    chat message and a conversation title: no dialog opens, no script runs, no element is injected."""
    from playwright.sync_api import expect, sync_playwright

    from core.services import conversations, turns
    from core.services.users import LOCAL_USER
    from storage.db import make_engine

    srv, _net_log = server
    url = f"http://127.0.0.1:{srv.port}"
    data = Path(srv.env["REFSHEET_DATA_DIR"])
    payload = " ".join(PAYLOADS)
    book = {"entries": [{"keys": [PAYLOADS[1]], "content": payload, "enabled": True}], "extensions": {}}
    character = _seed(data, (shared / "images" / "seraphina_neutral.png").read_bytes(), f"Mira {PAYLOADS[0]}",
                      payload, first_mes=payload, description=payload, scenario=payload, creator_notes=payload,
                      character_book=book, tags=[PAYLOADS[2]])  # fmt: skip
    engine = make_engine(f"sqlite:///{data / 'refsheet.db'}")
    chat = conversations.start(engine, LOCAL_USER, character).id
    conversations.rename(engine, LOCAL_USER, chat, f"Title {PAYLOADS[3]} {PAYLOADS[1]}")
    turns.send(engine, LOCAL_USER, chat, payload)
    engine.dispose()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        for path in ("", "/library", f"/chat?character={character}&conversation={chat}"):
            page.goto(url + path)
            expect(page.get_by_text("Mira", exact=False).first).to_be_visible(timeout=60_000)
            _wait_idle(page)
            if path == "/library":  # the editor shows every field and the character book
                page.get_by_role("button", name="Edit").first.click()
                _wait_idle(page)
                page.get_by_text("Character book").first.click()
                _wait_idle(page)
            for link in page.locator("a").all():  # clicking any link a payload may have made does nothing
                assert not (link.get_attribute("href") or "").lower().startswith("javascript:")
            assert page.evaluate("window.__pwned") is None, path
            assert page.locator('img[src="x"], iframe, svg[onload]').count() == 0, path
            assert page.locator("script", has_text="__pwned").count() == 0, path
            assert "<script>" in page.inner_text("body"), path  # shown as the text it is
        _shot(page, "hostile-text")
        browser.close()
    assert dialogs == []


def test_no_stored_text_makes_the_browser_reach_out(server, shared: Path) -> None:
    """Markdown images, links, HTML and autolinks in every field (name, notes, language, tags, card
    fields, lore, an image's file name, the persona, a title, messages, a failed reply's reason): on
    Home, the Library and its editor, and Chat, the browser requests nothing beyond loopback and the
    page holds no image or link to the payload's host."""
    from dataclasses import replace

    from playwright.sync_api import expect, sync_playwright

    from core.base.sheets import prepare_image
    from core.services import characters, conversations, turns
    from core.services.users import LOCAL_USER, save_persona
    from storage.db import make_engine, migrate
    from tests.test_hostile_strings import LINE, TEXT

    srv, net_log = server
    url = f"http://127.0.0.1:{srv.port}"
    engine = make_engine(f"sqlite:///{Path(srv.env['REFSHEET_DATA_DIR']) / 'refsheet.db'}")
    migrate(engine)
    art = prepare_image((shared / "images" / "seraphina_neutral.png").read_bytes(), "sheet.png")
    save_persona(engine, LOCAL_USER, LINE[:100], TEXT)
    profile = {"name": f"Mira {LINE}", "notes": TEXT, "language": LINE, "tags": [LINE], "creator": LINE,
               "description": TEXT, "first_mes": TEXT, "alternate_greetings": [TEXT], "scenario": TEXT,
               "character_book": {"entries": [{"keys": [LINE], "content": TEXT, "enabled": True}]}}  # fmt: skip
    character = characters.create(engine, LOCAL_USER, profile, [art, replace(art, name=LINE)]).id
    chat = conversations.start(engine, LOCAL_USER, character, LINE).id
    turns.send(engine, LOCAL_USER, chat, TEXT)
    engine.dispose()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        outside: list[str] = []

        def guard(route) -> None:
            if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", guard)
        for path in ("", "/library", f"/chat?character={character}&conversation={chat}"):
            page.goto(url + path)
            expect(page.get_by_text("Mira", exact=False).first).to_be_visible(timeout=60_000)
            _wait_idle(page)
            if path == "/library":  # the editor: every field, the images with their names, the book
                page.get_by_role("button", name="Edit").first.click()
                _wait_idle(page)
                page.get_by_text("Character book").first.click()
                _wait_idle(page)
            page.get_by_text("P !", exact=False).first.wait_for(timeout=30_000)  # the payload is on the page…
            live = page.locator(
                'img[src*="evil"], a[href*="evil"]:not([href^="#"]), img[src^="//"], a[href^="mailto:"]'
            )
            assert live.count() == 0, (path, [live.nth(i).evaluate("e => e.outerHTML") for i in range(live.count())])
        _shot(page, "hostile-markdown")
        browser.close()
    assert outside == []  # …and nothing on it reached for the payload's hosts
    leaks = [json.loads(line) for line in net_log.read_text().splitlines()] if net_log.exists() else []
    assert leaks == []


def test_secrets_stay_secret(tmp_path: Path, tiny_checkpoint: Path, shared: Path) -> None:
    """A planted HF_TOKEN and API key appear nowhere a person or another program could read them: not
    in any page, not in the server's log, not in any file it hands out: cards (PNG, CHARX), chats
    (Markdown, JSONL) and the library backup."""
    from playwright.sync_api import expect, sync_playwright

    token, key = "hf_PLANTEDtoken0123456789", "sk-PLANTEDkey0123456789"
    env, _ = server_env(tmp_path, tiny_checkpoint)
    env.update(HF_TOKEN=token, REFSHEET_API_KEY=key)
    character = _seed(Path(env["REFSHEET_DATA_DIR"]), (shared / "images" / "seraphina_neutral.png").read_bytes(),
                      "Seraphina", first_mes="Hello.")  # fmt: skip
    srv = Server(env, free_port(), tmp_path / "server.log")
    srv.start()
    seen: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            url = f"http://127.0.0.1:{srv.port}"
            page.goto(f"{url}/chat?character={character}")
            expect(page.get_by_text("Hello.")).to_be_visible(timeout=60_000)
            page.locator('[data-testid="stChatInputTextArea"]').fill("Tell me a secret")
            page.locator('[data-testid="stChatInputTextArea"]').press("Enter")
            expect(page.get_by_role("button", name="Regenerate")).to_have_count(1, timeout=120_000)
            _wait_idle(page)
            seen.append(page.content())
            for path in ("", "/library", "/create"):
                page.goto(url + path)
                _wait_idle(page)
                seen.append(page.content())
            files: dict[str, bytes] = {}

            def download(button: str) -> None:
                _wait_idle(page)  # a button clicked while the page reruns can be replaced under the click
                with page.expect_download(timeout=120_000) as started:
                    page.get_by_role("button", name=button).click()
                files[button] = Path(started.value.path()).read_bytes()

            page.goto(f"{url}/chat?character={character}")
            _wait_idle(page)
            page.get_by_text("This conversation").click()  # the chat's sidebar: the conversation's files
            download("Download as Markdown")
            download("Download for SillyTavern (JSONL)")
            page.goto(f"{url}/library")
            _wait_idle(page)
            page.get_by_text("Backup and restore").click()
            download("Download a backup")
            page.get_by_role("button", name="Edit").first.click()
            download("Export character card (PNG)")
            download("Export character card (CHARX)")
            browser.close()
    finally:
        srv.kill()
    # The pages, the log, every file the app hands out (a zip's members unpacked, a card's base64 data read).
    card = files["Export character card (PNG)"]
    readable = [*seen, srv.log.read_text(), json.dumps(read_card(card).data)]
    for name, raw in files.items():
        readable.append(raw.decode("latin-1"))
        if raw.startswith(b"PK"):
            readable += [data.decode("latin-1") for data in read_zip(raw, name).values()]
    assert len(files) == 5 and "Tell me a secret" in files["Download as Markdown"].decode()
    for secret in (token, key):
        assert not any(secret in text for text in readable)


def test_a_reply_cut_off_by_a_crash_comes_back_unfinished_and_continues(server, shared: Path) -> None:
    """kill -9 while a reply streams: after the restart the user's message and the reply so far are
    there, the reply marked unfinished (once its writer's claim lapses), and Continue carries it on."""
    from playwright.sync_api import expect, sync_playwright
    from sqlmodel import Session

    from core.base.sampling import SamplerSettings
    from core.services import conversations
    from core.services.users import LOCAL_USER
    from storage import conversations as convs
    from storage.db import make_engine

    srv, _net_log = server
    data = Path(srv.env["REFSHEET_DATA_DIR"])
    character = _seed(data, (shared / "images" / "seraphina_neutral.png").read_bytes(), "Sera", first_mes="Hello.")
    engine = make_engine(f"sqlite:///{data / 'refsheet.db'}")
    chat = conversations.start(engine, LOCAL_USER, character).id
    long_reply = SamplerSettings(temperature=0, max_new_tokens=2500)
    conversations.save_sampler(engine, LOCAL_USER, chat, long_reply)
    url = f"http://127.0.0.1:{srv.port}/chat?character={character}&conversation={chat}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        expect(page.get_by_text("Hello.")).to_be_visible(timeout=60_000)
        _wait_idle(page)
        page.locator('[data-testid="stChatInputTextArea"]').fill("Tell me a long story.")
        page.locator('[data-testid="stChatInputTextArea"]').press("Enter")
        expect(page.get_by_role("button", name="Stop")).to_be_visible(timeout=60_000)
        deadline = time.time() + 60
        while len(_messages(page)[-1]) < 200:  # some of the reply is on screen, and saved as it streams
            assert time.time() < deadline
            page.wait_for_timeout(100)
        srv.kill()  # the machine loses power mid-reply
        srv.start()
        page.goto(url)
        asked_bubble = page.get_by_role("group", name="Chat message from user")
        expect(asked_bubble.get_by_text("Tell me a long story.")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Unfinished")).to_be_visible(timeout=60_000)  # its writer's claim lapsed
        _shot(page, "unfinished-after-crash")
        with Session(engine) as s:
            *_, asked, cut = convs.list_messages(s, chat)
        assert asked.text == "Tell me a long story." and cut.text and cut.status == "writing"
        conversations.save_sampler(engine, LOCAL_USER, chat, SamplerSettings(temperature=0, max_new_tokens=30))
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("button", name="Stop")).to_have_count(0, timeout=120_000)  # written to its end
        expect(page.get_by_role("button", name="Regenerate")).to_have_count(1, timeout=120_000)
        _wait_idle(page)
        browser.close()
    with Session(engine) as s:
        *_, done = convs.list_messages(s, chat)
    assert done.id == cut.id and done.text.startswith(cut.text) and done.text != cut.text
    # Complete when the model ended it; still unfinished (Continue again) when it reached the 30 tokens.
    assert done.stats["finish"] in ("stop", "length")
    assert done.status == ("complete" if done.stats["finish"] == "stop" else "partial")
    engine.dispose()


QUEUE_WATCH = """
new MutationObserver((changes) => {
  for (const change of changes) {
    if ((change.target.textContent || "").match(/Waiting for the model: \\d+ repl/)) window.__toldOfQueue = true;
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def _answered(page, message: str) -> bool:
    """The page shows `message` followed by a finished reply, and nothing is being written."""
    roles = page.eval_on_selector_all(
        '[data-testid="stChatMessageContent"]',
        "els => els.map(e => [e.getAttribute('aria-label') || '', e.innerText])",
    )
    mine = next((i for i, (_, text) in enumerate(roles) if message in text), None)
    after = roles[mine + 1 :] if mine is not None else []
    return (
        any("assistant" in label and text.strip() for label, text in after)
        and page.get_by_role("button", name="Stop").count() == 0
        and page.locator('[data-test-script-state="notRunning"]').count() > 0
    )


def test_eight_people_at_once(server, shared: Path) -> None:
    """Eight browser sessions send a message at the same moment (two of them in one conversation): no
    error, no "database is locked", every message and reply saved in order, every waiting user told
    how many replies are ahead. Prints time to first token and page latency (p50/p95)."""
    import statistics

    from playwright.sync_api import expect, sync_playwright
    from sqlmodel import Session

    from core.base.sampling import SamplerSettings
    from core.services import conversations
    from core.services.users import LOCAL_USER
    from storage import conversations as convs
    from storage.db import make_engine

    srv, _net_log = server
    data = Path(srv.env["REFSHEET_DATA_DIR"])
    art = (shared / "images" / "seraphina_neutral.png").read_bytes()
    engine = make_engine(f"sqlite:///{data / 'refsheet.db'}")
    chats = []
    for i in range(7):
        character = _seed(data, art, f"Friend {i}", first_mes=f"Hello from {i}.")
        chat = conversations.start(engine, LOCAL_USER, character).id
        conversations.save_sampler(engine, LOCAL_USER, chat, SamplerSettings(temperature=0, max_new_tokens=200))
        chats.append((character, chat))
    people = [*chats, chats[0]]  # the eighth joins the first one's conversation
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = []
        for character, chat in people:
            page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
            page.add_init_script(QUEUE_WATCH)  # the page notes the queue notice itself, however briefly shown
            page.goto(f"http://127.0.0.1:{srv.port}/chat?character={character}&conversation={chat}")
            pages.append(page)
        for page in pages:
            expect(page.locator('[data-testid="stChatInputTextArea"]')).to_be_visible(timeout=120_000)
            _wait_idle(page)
        boxes = [page.locator('[data-testid="stChatInputTextArea"]') for page in pages]
        for n, box in enumerate(boxes):
            box.fill(f"Message {n} from person {n}")
        sent = []
        for box in boxes:  # as close together as one browser can
            box.press("Enter")
            sent.append(time.perf_counter())
        done = {}
        deadline = time.time() + 300
        while len(done) < len(pages):
            assert time.time() < deadline, f"still waiting: {sorted(set(range(8)) - set(done))}"
            for n, page in enumerate(pages):
                if n in done:
                    continue
                if _answered(page, f"Message {n} from person {n}"):
                    done[n] = time.perf_counter() - sent[n]
            time.sleep(0.25)
        errors = [n for n, page in enumerate(pages) if page.locator('[data-testid="stException"]').count()]
        told = {n for n, page in enumerate(pages) if page.evaluate("window.__toldOfQueue === true")}
        browser.close()
    assert errors == []
    assert "database is locked" not in srv.log.read_text()
    ttfts = []
    with Session(engine) as s:
        for n, (_character, chat) in enumerate(chats):
            story = convs.list_messages(s, chat)
            assert [m.turn for m in story] == list(range(len(story)))  # no duplicate or skipped turn
            # Every reply written to its end: none failed, stopped or left half-way.
            ended = [(m.turn, m.role, m.status, m.stats.get("finish")) for m in story]
            assert all(m.status == "complete" or (m.status == "partial" and m.stats.get("finish") == "length")
                       for m in story), ended  # fmt: skip
            users = [m.text for m in story if m.role == "user"]
            expected = {f"Message {n} from person {n}"} | ({"Message 7 from person 7"} if n == 0 else set())
            assert set(users) == expected and len(users) == len(expected)
            replies = [m for m in story[1:] if m.role == "assistant"]
            assert len(replies) == len(expected) and all(r.text for r in replies)
            ttfts += [r.stats["queued_s"] + r.stats["ttft_s"] for r in replies]
    engine.dispose()
    # Replies are written one at a time: all but the first in line waited, and were told so.
    assert len(told) >= 7, f"told of the queue: {sorted(told)}"
    q = statistics.quantiles
    print(
        f"\n8 at once: time to first token (queue included) p50 {statistics.median(ttfts):.2f} s, "
        f"p95 {q(ttfts, n=20)[-1]:.2f} s; page latency to a finished reply p50 "
        f"{statistics.median(done.values()):.2f} s, p95 {q(list(done.values()), n=20)[-1]:.2f} s"
    )


# Loaded by one server under test: a button's work fails unexpectedly (the error page, not a traceback).
BROKEN_HIDE = """
from core.services import conversations
def _broken(*args, **kwargs):
    raise RuntimeError("boom in /srv/secret/hide.py")
conversations.set_hidden = _broken
"""


def test_two_replicas_on_one_postgresql(tmp_path: Path, tiny_checkpoint: Path, shared: Path, postgres_url: str) -> None:
    """The team recipe: two replicas started at the same moment on one empty PostgreSQL database both
    come up ready (migrated at start-up, before any page view); a replica whose database is down says
    so on /ready while /_stcore/health still says ok; a conversation open on one replica shows what
    is sent on the other within seconds, untouched; an unexpected failure shows an error id, no
    traceback, and the server's log holds it."""
    import urllib.error
    import urllib.request

    from playwright.sync_api import expect, sync_playwright

    from core.base.sheets import prepare_image
    from core.services import characters, conversations
    from core.services.users import LOCAL_USER
    from storage.db import make_engine

    def get(url: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())

    env, _net_log = server_env(tmp_path, tiny_checkpoint)
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    (broken_dir / "sitecustomize.py").write_text(BROKEN_HIDE)
    replicas = [
        Server({**env, "DATABASE_URL": postgres_url}, free_port(), tmp_path / "one.log"),
        Server({**env, "DATABASE_URL": postgres_url, "PYTHONPATH": f"{broken_dir}{os.pathsep}{ROOT}"}, free_port(),
               tmp_path / "two.log"),
        Server({**env, "DATABASE_URL": "postgresql+psycopg://refsheet@127.0.0.1:9/down?connect_timeout=2"},
               free_port(), tmp_path / "down.log"),
    ]  # fmt: skip
    for replica in replicas:  # all at once: the start-up race of two replicas on an empty database
        replica.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.port", str(replica.port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=replica.env, stdout=replica.log.open("a"), stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        for replica in replicas:
            wait_for_http(f"http://127.0.0.1:{replica.port}/_stcore/health", replica.proc, replica.log, 90)
        one, two, down = (f"http://127.0.0.1:{r.port}" for r in replicas)

        def ready_within(url: str, seconds: float = 60) -> tuple[int, dict]:
            """Migrations run beside the HTTP server (it answers at once): ready once they are done."""
            deadline = time.monotonic() + seconds
            while (answer := get(url))[0] != 200 and time.monotonic() < deadline:
                assert answer == (503, {"ready": False, "state": "not_migrated"}), answer  # waiting, and says why
                time.sleep(0.5)
            return answer

        assert ready_within(f"{one}/ready") == (200, {"ready": True, "state": "ready"})  # before any page was viewed
        assert ready_within(f"{two}/ready") == (200, {"ready": True, "state": "ready"})
        assert get(f"{down}/ready") == (503, {"ready": False, "state": "unreachable"})
        assert "Traceback" not in replicas[0].log.read_text() + replicas[1].log.read_text()

        engine = make_engine(postgres_url)
        art = prepare_image((shared / "images" / "seraphina_neutral.png").read_bytes())
        mira = characters.create(engine, LOCAL_USER, {"name": "Mira", "first_mes": "Welcome aboard."}, [art]).id
        chat = conversations.start(engine, LOCAL_USER, mira).id
        engine.dispose()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            here, there = browser.new_page(), browser.new_page()
            here.goto(f"{one}/chat?character={mira}&conversation={chat}")
            there.goto(f"{two}/chat?character={mira}&conversation={chat}")
            for page in (here, there):
                _wait_idle(page)
            there.get_by_placeholder(re.compile("Message Mira")).fill("Hello from the other replica.")
            there.keyboard.press("Enter")
            _wait_idle(there)
            # Nobody touches this page: it follows the conversation on its own.
            said = here.get_by_role("group", name="Chat message from user").get_by_text("Hello from the other replica.")
            expect(said).to_be_visible(timeout=20_000)

            there.locator('[data-testid="stChatMessage"] [data-testid="stPopoverButton"]').first.click()  # its menu
            there.get_by_role("button", name="Hide from the character").first.click()
            _wait_idle(there)
            oops = re.compile(r"Something went wrong on our side\. Error id [0-9a-f]{8}")
            expect(there.get_by_text(oops)).to_be_visible()
            shown = there.locator("body").inner_text()
            assert "Traceback" not in shown and "/srv/secret" not in shown and "RuntimeError" not in shown
            error_id = re.search(r"Error id ([0-9a-f]{8})", shown).group(1)
            browser.close()
        logged = replicas[1].log.read_text()
        assert f"Unexpected error {error_id}" in logged and "boom in /srv/secret/hide.py" in logged
    finally:
        for replica in replicas:
            replica.kill()
