"""Teams in a real browser with a real identity provider: the npm `oidc-provider` (a certified OpenID
Provider) on loopback, and Chromium signing in through Streamlit's own `st.login` redirect flow.

Alice's private character and conversation stay out of Bob's sight everywhere (Home, Library, Chat,
deep links); her shared character is his to chat with and copy, read-only; she never sees his
conversation with it; someone outside the allowed domain is told why, and signing out works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.servers import free_port, wait_for_http
from tests.conftest import ROOT
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, Server, _shot, _wait_idle, server_env

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROVIDER_DIR = Path(os.environ.get("REFSHEET_OIDC_PROVIDER_DIR", "/opt/refsheet-ci/oidc"))
NODE = shutil.which("node") or ""


@pytest.fixture
def identity_provider(tmp_path: Path):
    """Starts the provider for an app on a given port; yields (issuer URL, app port, client secret)."""
    if not NODE or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        message = (f"needs Node.js and `npm install oidc-provider@9` in {PROVIDER_DIR} "
                   "(REFSHEET_OIDC_PROVIDER_DIR; .ci/run does it)")  # fmt: skip
        if os.environ.get("REFSHEET_REQUIRE_OIDC"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port, app_port, secret = free_port(), free_port(), "a-client-secret-for-tests"
    log = tmp_path / "provider.log"
    command = [NODE, str(ROOT / "tests" / "oidc" / "provider.mjs"), str(port), "refsheet-chat", secret,
               f"http://127.0.0.1:{app_port}/oauth2callback"]  # fmt: skip
    proc = subprocess.Popen(command, env={**os.environ, "REFSHEET_OIDC_PROVIDER_DIR": str(PROVIDER_DIR)},
                            stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    issuer = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{issuer}/.well-known/openid-configuration", proc, log, seconds=60)
        yield issuer, app_port, secret
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def team_server(tmp_path: Path, tiny_checkpoint: Path, identity_provider):
    issuer, port, secret = identity_provider
    secrets = tmp_path / "secrets.toml"  # outside the repository: the developer's own stays untouched
    secrets.write_text(f"""[auth]
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "a-cookie-secret-for-tests-0123456789"
client_id = "refsheet-chat"
client_secret = "{secret}"
server_metadata_url = "{issuer}/.well-known/openid-configuration"
client_kwargs = {{ prompt = "login" }}
""")
    env, net_log = server_env(tmp_path, tiny_checkpoint)
    env["REFSHEET_ALLOWED_DOMAINS"] = "example.test"
    env["REFSHEET_ADMINS"] = "carol@example.test"
    srv = Server(env, port, tmp_path / "server.log", ("--secrets.files", str(secrets)))
    srv.start()
    yield srv, net_log
    srv.kill()


def sign_in(browser, url: str, account: str, guard: list[str] | None = None):
    """A fresh browser profile signing in through the provider's own screens; returns the page.
    `guard`: record (and refuse) every request this page makes beyond loopback into that list."""
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US").new_page()
    if guard is not None:
        page.route("**/*", lambda route: _loopback_only(route, guard))
    page.goto(url)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/interaction/**", timeout=30_000)
    page.locator('input[name="login"]').fill(account)
    page.locator('input[name="password"]').fill("any password works here")
    page.locator("[type=submit]").first.click()
    page.wait_for_url("**/interaction/**", timeout=30_000)  # the consent screen
    page.locator("[type=submit]").first.click()
    page.wait_for_url(f"{url}/**", timeout=30_000)
    expect(page.get_by_role("heading", name="RefSheet Chat")).to_be_visible(timeout=60_000)
    _wait_idle(page)
    return page


def _loopback_only(route, outside: list[str]) -> None:
    """Refuse requests beyond loopback; record those the app's pages made (the identity provider's own
    login screens load web fonts, which is the provider's business, not the app's)."""
    from urllib.parse import urlsplit

    if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
        route.continue_()
        return
    try:
        made_by = route.request.frame.url
    except Exception:  # noqa: BLE001 - a request without a frame (a worker): count it
        made_by = ""
    if "/interaction/" not in made_by and "/session/end" not in made_by:
        outside.append(route.request.url)
    route.abort()


def test_private_stays_private_and_shared_is_read_only(team_server, shared: Path) -> None:
    from playwright.sync_api import expect, sync_playwright
    from sqlmodel import Session, select

    from core.base.sheets import prepare_image
    from core.services import characters, conversations, turns
    from core.services.users import Actor
    from storage.db import make_engine
    from storage.tables import User

    srv, net_log = team_server
    url = f"http://127.0.0.1:{srv.port}"
    art = prepare_image((shared / "images" / "seraphina_neutral.png").read_bytes())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        alice_page = sign_in(browser, url, "alice")
        expect(alice_page.get_by_text("Signed in as Alice Liddell")).to_be_visible()
        db = make_engine(f"sqlite:///{Path(srv.env['REFSHEET_DATA_DIR']) / 'refsheet.db'}")
        with Session(db) as s:
            alice_id = s.exec(select(User.id).where(User.email == "alice@example.test")).one()
        alice = Actor(alice_id, "Alice Liddell", "alice@example.test")
        secret = characters.create(db, alice, {"name": "Secret Sable", "first_mes": "Hello."}, [art]).id
        secret_chat = conversations.start(db, alice, secret).id
        turns.send(db, alice, secret_chat, "Only for Alice's eyes")
        lantern = characters.create(db, alice, {"name": "Lantern Keeper", "first_mes": "Welcome, {{user}}."}, [art]).id

        # Alice shares the Lantern Keeper from her library.
        alice_page.goto(f"{url}/library")
        expect(alice_page.get_by_text("Lantern Keeper")).to_be_visible(timeout=30_000)
        _wait_idle(alice_page)
        alice_page.locator('[data-testid="stButton"]').filter(has_text="Edit").first.click()  # newest first
        expect(alice_page.get_by_text("Share with the team")).to_be_visible(timeout=30_000)
        alice_page.get_by_text("Share with the team").click()
        _wait_idle(alice_page)
        assert characters.summaries(db, alice)[0].shared  # the switch reached the database

        bob_page = sign_in(browser, url, "bob")
        expect(bob_page.get_by_text("Signed in as Bob Builder")).to_be_visible()
        assert "Secret Sable" not in bob_page.inner_text("body")  # Home
        bob_page.goto(f"{url}/library")
        expect(bob_page.get_by_text("Shared by Alice Liddell")).to_be_visible(timeout=30_000)
        _wait_idle(bob_page)
        body = bob_page.inner_text("body")
        assert "Lantern Keeper" in body and "Secret Sable" not in body
        expect(bob_page.get_by_role("button", name="Edit")).to_have_count(0)  # not his to change
        _shot(bob_page, "team-library-bob")
        # A deep link to Alice's private character and her conversation shows him nothing of them.
        bob_page.goto(f"{url}/chat?character={secret}&conversation={secret_chat}")
        expect(bob_page.get_by_text("That link names a character or conversation that is not here")).to_be_visible(
            timeout=60_000
        )  # said, and what he may see shown instead: her shared one, with no conversation started for him
        _wait_idle(bob_page)
        body = bob_page.inner_text("body")
        assert "Secret Sable" not in body and "Only for Alice" not in body
        assert "Lantern Keeper" in body and f"character={lantern}" in bob_page.url
        bob_page.get_by_role("button", name="New conversation").click()
        expect(bob_page.get_by_text("Welcome, Bob Builder.")).to_be_visible(timeout=60_000)
        _wait_idle(bob_page)
        chat_input = bob_page.locator('[data-testid="stChatInputTextArea"]')
        chat_input.fill("Hello from Bob")
        chat_input.press("Enter")
        expect(bob_page.get_by_role("button", name="Regenerate")).to_have_count(1, timeout=120_000)
        _wait_idle(bob_page)
        bob_page.goto(f"{url}/library")
        expect(bob_page.get_by_role("button", name="Copy")).to_be_visible(timeout=30_000)
        _wait_idle(bob_page)
        bob_page.get_by_role("button", name="Copy").click()
        expect(bob_page.get_by_text("Lantern Keeper (copy)")).to_be_visible(timeout=30_000)
        _wait_idle(bob_page)
        expect(bob_page.get_by_role("button", name="Edit")).to_have_count(1)  # his copy is his own

        # Alice's chat with her own character never shows Bob's conversation.
        alice_page.goto(f"{url}/chat?character={lantern}")
        expect(alice_page.get_by_text("Welcome, Alice Liddell.")).to_be_visible(timeout=60_000)
        _wait_idle(alice_page)
        assert "Hello from Bob" not in alice_page.inner_text("body")

        # Someone from outside the allowed domain is told why, and can sign out.
        eve_page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        eve_page.goto(url)
        eve_page.get_by_role("button", name="Sign in").click()
        eve_page.wait_for_url("**/interaction/**")
        eve_page.locator('input[name="login"]').fill("eve")
        eve_page.locator('input[name="password"]').fill("x")
        eve_page.locator("[type=submit]").first.click()
        eve_page.wait_for_url("**/interaction/**")
        eve_page.locator("[type=submit]").first.click()
        refusal = eve_page.get_by_text("but this server is for its team only", exact=False)
        expect(refusal).to_be_visible(timeout=60_000)  # the address is shown, not linked (a joiner after @):
        assert "eve@\u2060elsewhere.test" in refusal.inner_text()
        assert "Lantern Keeper" not in eve_page.inner_text("body")

        bob_page.get_by_role("button", name="Sign out").click()
        bob_page.wait_for_url("**/session/end**", timeout=30_000)  # the provider asks to confirm
        bob_page.locator("button[autofocus], [type=submit]").first.click()
        expect(bob_page.get_by_role("button", name="Sign in")).to_be_visible(timeout=30_000)
        assert "Lantern Keeper" not in bob_page.inner_text("body")
        browser.close()
    db.dispose()

    leaks = [json.loads(line) for line in net_log.read_text().splitlines()] if net_log.exists() else []
    assert leaks == [], f"the server reached beyond loopback: {leaks}"


def test_team_mode_keeps_its_promises(team_server, shared: Path) -> None:
    """Issue 19 through the real provider: un-sharing hides the character from Home's Recent; an
    admin's backup holds no one else's words and her deep link to a private character finds nothing;
    a provider name that is a Markdown payload reaches no one's browser as an image or a link (and
    the hand-over toast names it harmlessly); an address without `email_verified` is not let in; a
    cookie copied before Sign out no longer signs anyone in."""
    import io
    import zipfile

    from playwright.sync_api import expect, sync_playwright
    from sqlmodel import Session, select

    from core.base.sheets import prepare_image
    from core.services import characters, conversations, turns
    from core.services.users import LOCAL_USER, Actor
    from storage.db import make_engine
    from storage.tables import User

    srv, net_log = team_server
    url = f"http://127.0.0.1:{srv.port}"
    art = prepare_image((shared / "images" / "seraphina_neutral.png").read_bytes())
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        sign_in(browser, url, "alice", outside)  # recorded as a person, so her rows have an owner
        bob_page = sign_in(browser, url, "bob", outside)
        db = make_engine(f"sqlite:///{Path(srv.env['REFSHEET_DATA_DIR']) / 'refsheet.db'}")
        with Session(db) as s:
            ids = {u.subject: u.id for u in s.exec(select(User)).all()}
        alice, bob = Actor(ids["alice"], "Alice"), Actor(ids["bob"], "Bob")
        characters.create(db, LOCAL_USER, {"name": "Before sign-in"}, [art])  # for the admin's hand-over
        secret = characters.create(db, alice, {"name": "Secret Sable", "first_mes": "Hello."}, [art]).id
        turns.send(db, alice, conversations.start(db, alice, secret).id, "Only for Alice's eyes")
        lantern = characters.create(db, alice, {"name": "Lantern Keeper", "first_mes": "Welcome."}, [art]).id
        characters.share(db, alice, lantern, True)
        turns.send(db, bob, conversations.start(db, bob, lantern).id, "Bob's words to the lantern")

        bob_page.goto(url)
        expect(bob_page.get_by_text("Lantern Keeper")).to_be_visible(timeout=60_000)  # Recent, while shared
        characters.share(db, alice, lantern, False)
        bob_page.reload()
        expect(bob_page.get_by_role("heading", name="RefSheet Chat")).to_be_visible(timeout=60_000)
        _wait_idle(bob_page)
        assert "Lantern Keeper" not in bob_page.inner_text("body")  # not in Recent, not anywhere

        # The admin: lists Alice's private character (to delete it) but opens nothing of hers.
        carol_page = sign_in(browser, url, "carol", outside)
        expect(carol_page.get_by_text("Signed in as Carol Admin · admin")).to_be_visible()
        carol_page.goto(f"{url}/library")
        expect(carol_page.get_by_text("Secret Sable")).to_be_visible(timeout=60_000)
        _wait_idle(carol_page)
        carol_page.get_by_text("Backup and restore").click()
        _wait_idle(carol_page)
        with carol_page.expect_download(timeout=120_000) as started:
            carol_page.get_by_role("button", name="Download a backup").click()
        with zipfile.ZipFile(io.BytesIO(Path(started.value.path()).read_bytes())) as archive:
            backup_text = b"".join(archive.read(n) for n in archive.namelist() if n.endswith((".json", ".jsonl")))
        for words in (b"Only for Alice", b"Bob's words", b"Secret Sable", b"Lantern Keeper"):
            assert words not in backup_text
        carol_page.goto(f"{url}/chat?character={secret}")
        expect(carol_page.get_by_role("heading", name="Chat")).to_be_visible(timeout=60_000)
        _wait_idle(carol_page)
        body = carol_page.inner_text("body")
        assert "Secret Sable" not in body and "Hello." not in body and "Only for Alice" not in body

        # A provider name that is a Markdown payload: shown, never fetched or linked, in the sidebar
        # and in the admin's hand-over toast.
        mallory_page = sign_in(browser, url, "mallory", outside)
        expect(mallory_page.get_by_text("Signed in as Mallory", exact=False)).to_be_visible()
        carol_page.goto(f"{url}/library")
        expect(carol_page.get_by_text("Made before sign-in", exact=False)).to_be_visible(timeout=60_000)
        carol_page.get_by_text("Made before sign-in", exact=False).click()
        _wait_idle(carol_page)
        carol_page.locator('[data-testid="stSelectbox"]').last.click()
        carol_page.get_by_role("option", name="Mallory", exact=False).click()
        _wait_idle(carol_page)
        carol_page.get_by_role("button", name="Hand over").click()
        expect(carol_page.get_by_text("now belong to Mallory", exact=False)).to_be_visible(timeout=30_000)
        _shot(carol_page, "team-hand-over-to-a-payload-name")
        for page in (mallory_page, carol_page):
            live = page.locator('img[src*="evil"], a[href*="evil"]:not([href^="#"])')
            assert live.count() == 0

        # No verified address, no entry (Entra-style: the claim is simply missing).
        ghost_page = sign_in_refused(browser, url, "ghost")
        expect(ghost_page.get_by_text("has no verified email address", exact=False)).to_be_visible(timeout=60_000)

        # Sign out ends every copy of the sign-in: a cookie saved before it shows the sign-in page.
        copied = bob_page.context.cookies()
        bob_page.get_by_role("button", name="Sign out").click()
        bob_page.wait_for_url("**/session/end**", timeout=30_000)
        bob_page.locator("button[autofocus], [type=submit]").first.click()
        expect(bob_page.get_by_role("button", name="Sign in")).to_be_visible(timeout=30_000)
        replay = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        replay.add_cookies(copied)
        replayed = replay.new_page()
        replayed.goto(url)
        expect(replayed.get_by_role("button", name="Sign in")).to_be_visible(timeout=60_000)
        assert "Signed in as Bob" not in replayed.inner_text("body")
        browser.close()
    db.dispose()
    assert outside == []
    leaks = [json.loads(line) for line in net_log.read_text().splitlines()] if net_log.exists() else []
    assert leaks == []


def sign_in_refused(browser, url: str, account: str):
    """Through the provider's screens for someone the app will not let in; returns the page."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US").new_page()
    page.goto(url)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/interaction/**", timeout=30_000)
    page.locator('input[name="login"]').fill(account)
    page.locator('input[name="password"]').fill("x")
    page.locator("[type=submit]").first.click()
    page.wait_for_url("**/interaction/**", timeout=30_000)
    page.locator("[type=submit]").first.click()
    return page
