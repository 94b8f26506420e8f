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
    srv = Server(env, port, tmp_path / "server.log", ("--secrets.files", str(secrets)))
    srv.start()
    yield srv, net_log
    srv.kill()


def sign_in(browser, url: str, account: str):
    """A fresh browser profile signing in through the provider's own screens; returns the page."""
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US").new_page()
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


def test_private_stays_private_and_shared_is_read_only(team_server, shared: Path) -> None:
    from playwright.sync_api import expect, sync_playwright
    from sqlmodel import Session, select

    from core import characters, conversations, turns
    from core.sheets import prepare_image
    from core.users import Actor
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
        expect(bob_page.get_by_text("Welcome, Bob Builder.")).to_be_visible(timeout=60_000)  # her shared one
        _wait_idle(bob_page)
        body = bob_page.inner_text("body")
        assert "Secret Sable" not in body and "Only for Alice" not in body
        assert f"character={lantern}" in bob_page.url
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
        expect(eve_page.get_by_text("eve@elsewhere.test, but this server is for its team only")).to_be_visible(
            timeout=60_000
        )
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
