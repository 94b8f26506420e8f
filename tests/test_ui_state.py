"""The UI's state, one way in: session and widget keys built only in `ui/state.py`, each page's URL
read once into a view, the chat page's decision, the router after a deep link, the Library's editor
in the URL, and the numbers the UI and the core share (sampler limits, the backend's cache key)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from core.base.sampling import LIMITS, InvalidSampler, Limit, SamplerSettings
from core.base.settings import Settings
from tests.conftest import ROOT, new_app
from ui.chat import Next, next_step
from ui.state import ChatView, LibraryView

STATE = "ui/state.py"


# -- keys are built in one place ------------------------------------------------------------------------
def key_problems(source: str, name: str = "<source>") -> list[str]:
    """Where `source` spells a session or widget key itself, or reads the URL without a view: a string
    (a literal, an f-string, `+`, `%`, `.format`, `str()`) passed as `key=` or as a form's key, or
    indexing the session, any use of `st.session_state`, and `st.query_params` anywhere but in
    `<View>.from_query(st.query_params)`."""
    tree = ast.parse(source, filename=name)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "key" and _spelled(keyword.value):
                    found.append(f"{where}: a string spelled as key=")
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if callee == "form" and node.args and _spelled(node.args[0]):
                found.append(f"{where}: a string spelled as a form's key")
        session = isinstance(node, ast.Subscript) and getattr(node.value, "attr", "") == "session_state"
        if session and _spelled(node.slice):
            found.append(f"{where}: a string spelled indexing the session")
        if isinstance(node, ast.Attribute) and node.attr == "session_state":
            found.append(f"{where}: st.session_state outside ui/state.py")
        if isinstance(node, ast.Attribute) and node.attr == "query_params":
            call = parents.get(node)
            reads_view = (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "from_query"
                and node in call.args
            )
            if not reads_view:
                found.append(f"{where}: st.query_params read without a view")
    return found


def _spelled(node: ast.AST) -> bool:
    """A key written out here rather than taken from ui/state.py: a string literal, an f-string, or a
    string built with `+`, `%`, `.format()` or `str()`."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr | ast.BinOp):
        return True
    return isinstance(node, ast.Call) and (
        getattr(node.func, "attr", "") == "format" or getattr(node.func, "id", "") == "str"
    )


def ui_files() -> list[Path]:
    files = sorted((ROOT / "pages").glob("*.py")) + sorted((ROOT / "ui").glob("*.py")) + [ROOT / "Home.py"]
    return [f for f in files if str(f.relative_to(ROOT)) != STATE]


def test_pages_and_ui_build_no_session_or_widget_key_and_read_the_url_through_views() -> None:
    problems = [p for f in ui_files() for p in key_problems(f.read_text(), str(f.relative_to(ROOT)))]
    assert problems == []
    assert len(ui_files()) >= 15  # the pages, ui/ and Home.py were all looked at


@pytest.mark.parametrize(
    "line",
    [
        'st.button("Edit", key=f"edit_{i}")',
        'st.text_input("x", key=f"{name}_{form}")',
        'with st.form(f"edit_{i}"):\n    pass',
        'st.session_state[f"window_{i}"] = 3',
        'x = st.session_state.get("reply_plan")',
        "st.session_state.editing = 3",
        'cid = int(st.query_params["character"])',
        'st.selectbox("Language", ["en"], key="ui_lang")',
        'st.button("Edit", key="edit_" + str(i))',
        'st.button("Edit", key="edit_%s" % i)',
        'st.button("Edit", key="edit_{}".format(i))',
        'st.toggle("Share", key=str(i))',
        'with st.form("editor"):\n    pass',
        'st.session_state["ui_lang"] = "en"',
    ],
)
def test_the_key_check_finds_each_way_a_page_could_spell_a_key(line: str) -> None:
    assert key_problems(line), line


def test_the_key_check_lets_the_ways_through_ui_state_pass() -> None:
    fine = (
        "st.button('Edit', key=state.key.edit_character(3))\n"
        "with st.form(state.key.editor_form(3)):\n    pass\n"
        "view = ChatView.from_query(st.query_params)\n"
        "st.page_link('pages/chat.py', query_params=ChatView(3).query)\n"
        "st.markdown(f'**{name}**')\n"
    )
    assert key_problems(fine) == []


# -- the URL, parsed once -------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["abc", "-1", "0", "", " 3", "3.0", "1e3", "٣", "+3", str(2**63), "9" * 30])
def test_a_bad_id_in_the_url_is_no_id(raw: str) -> None:
    """A bad id is no id, and the view says the link named something unusable, so Chat warns."""
    assert ChatView.from_query({"character": raw, "conversation": raw}) == ChatView(None, None, unusable=True)
    assert ChatView.from_query({"character": "3", "conversation": raw}) == ChatView(3, None, unusable=True)
    assert LibraryView.from_query({"edit": raw}) == LibraryView(None)


def test_a_link_that_names_nothing_is_usable() -> None:
    assert not ChatView.from_query({}).unusable and not ChatView.from_query({"character": "3"}).unusable
    assert not ChatView.from_query({"other": "abc"}).unusable


def test_views_read_and_write_the_url() -> None:
    view = ChatView.from_query({"character": "3", "conversation": "12", "other": "x"})
    assert (view.character, view.conversation) == (3, 12)
    assert ChatView(3).query == {"character": 3}
    assert view.query == {"character": 3, "conversation": 12}
    assert ChatView.from_query({}) == ChatView() and LibraryView.from_query({"edit": "7"}).edit == 7


# -- the chat page's decision ---------------------------------------------------------------------------
def decide(**given: bool) -> Next:
    facts = {"planned": False, "typed": False, "empty": False, "failed": False, "retry": False, "awaiting": False}
    return next_step(**(facts | given))


def test_what_the_chat_page_does_after_the_conversation() -> None:
    assert decide() is Next.NOTHING
    assert decide(planned=True, typed=True, empty=True, retry=True) is Next.WRITE_PLANNED  # a plan comes first
    assert decide(typed=True, empty=True, failed=True) is Next.SEND  # a message is stored even without a model
    assert decide(empty=True) is Next.GREET
    assert decide(empty=True, failed=True) is Next.NOTHING  # no greeting while the model cannot serve…
    assert decide(empty=True, failed=True, retry=True) is Next.LOAD_MODEL  # …until the user asks again
    assert decide(retry=True, awaiting=True) is Next.LOAD_MODEL
    assert decide(awaiting=True) is Next.OFFER_REPLY
    assert decide(awaiting=True, failed=True) is Next.NOTHING  # the failure's own button is the way on


# -- numbers defined once --------------------------------------------------------------------------------
def test_sampler_limits_are_the_validations() -> None:
    for name, limit in LIMITS.items():
        SamplerSettings(**{name: limit.lowest})
        SamplerSettings(**{name: limit.highest})
        with pytest.raises(InvalidSampler):
            SamplerSettings(**{name: limit.low - (limit.step or 1)})
        if limit.high is not None:
            with pytest.raises(InvalidSampler):
                SamplerSettings(**{name: limit.high + (limit.step or 1)})
    with pytest.raises(InvalidSampler):
        SamplerSettings(top_p=0.0)  # excluded: (0, 1]


def test_sampler_messages_say_the_limits_the_check_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bounds in a refusal come from `LIMITS`, never from the strings: change a limit and the
    message follows, in both languages."""
    monkeypatch.setitem(LIMITS, "max_new_tokens", Limit(16, 8192))
    with pytest.raises(InvalidSampler) as refused:
        SamplerSettings(max_new_tokens=9000)
    assert refused.value.message("en") == "Reply length must be between 16 and 8192 tokens; got 9000."
    assert "16 到 8192" in refused.value.message("zh")
    with pytest.raises(InvalidSampler) as refused:
        SamplerSettings.from_dict({"max_new_tokens": "lots"})  # a stored value that is not a number
    assert "between 16 and 8192" in refused.value.message("en")
    for name, limit in LIMITS.items():
        wrong = limit.low - (limit.step or 1)
        with pytest.raises(InvalidSampler) as refused:
            SamplerSettings(**{name: wrong})
        message = refused.value.message("en")
        assert f"{limit.low:g}" in message and "?" not in message, message
        if limit.high is not None:
            assert f"{limit.high:g}" in message, message


def test_the_backend_key_comes_from_the_settings_and_never_holds_the_api_key() -> None:
    settings = Settings(api_key="sk-very-secret", hf_token="hf-also-secret")
    key = settings.backend_key()
    names = {name for name, _ in key}
    assert names >= {"backend", "model_id", "quantization", "device", "dtype", "data_dir", "context_tokens",
                     "kv_cache_mb", "prefix_cache_mb", "api_base", "api_key", "api_model", "api_image_side",
                     "api_timeout"}  # fmt: skip
    assert not names & {"database_url", "max_upload_mb", "max_pixels", "preload", "allowed_emails", "admins"}
    assert "sk-very-secret" not in repr(key) and "hf-also-secret" not in repr(key)
    assert settings.with_(api_key="sk-other").backend_key() != key  # a changed key makes a new backend…
    assert settings.with_(max_pixels=1000, admins="a@b.c").backend_key() == key  # …an upload limit does not
    hash(key)  # a cache key
    for name, value in [("hf_token", "hf-other"), ("offline", True), ("api_image_tokens", 512)]:
        assert settings.with_(**{name: value}).backend_key() != key, name  # the backend reads each of these


def settings_read(source: str) -> set[str]:
    """The `Settings` fields a module reads: `settings.<field>` or `self.settings.<field>` (any name that
    ends in "settings"), and `getattr(settings, "<field>")`."""
    names = {f.name for f in dataclasses.fields(Settings)}

    def holder(node: ast.AST) -> str:
        return getattr(node, "id", None) or getattr(node, "attr", "")

    read: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and holder(node.value).endswith("settings") and node.attr in names:
            read.add(node.attr)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr" and len(node.args) >= 2:
            field_name = node.args[1]
            if holder(node.args[0]).endswith("settings") and isinstance(field_name, ast.Constant):
                read.add(field_name.value)
    return read


def test_every_setting_the_model_layer_reads_makes_a_new_backend() -> None:
    """A setting that core/model/ reads, once changed (a token put in the secrets file, another server),
    must make a new backend: a cached one would keep the old value until the server restarts."""
    read = {name for path in (ROOT / "core" / "model").rglob("*.py") for name in settings_read(path.read_text())}
    marked = {f.name for f in dataclasses.fields(Settings) if f.metadata.get("backend")}
    assert {"model_id", "api_base", "hf_token", "offline", "api_image_tokens"} <= read  # the scan finds them
    assert read - marked == set(), "mark these fields `backend` in core/base/settings.py"
    assert settings_read("self.settings.offline; getattr(settings, 'hf_token'); self.sampler.seed") == {
        "offline",
        "hf_token",
    }


# -- the router, the editor in the URL, the sampler inputs: the real app ------------------------------
def seed(engine, owner, name: str = "Seraphina", **profile) -> int:
    from core.services import characters
    from tests.conftest import sheet_image

    return characters.create(engine, owner, {"name": name, **profile}, [sheet_image("red")]).id


@pytest.mark.slow
def test_every_page_is_drawn_once_and_only_under_the_router(app_env, app_db, monkeypatch) -> None:
    """AppTest starts every run in Streamlit's old `pages/` mode, as a deep link does as the first request
    of a server process: each page still draws only under the router, once, and a click still counts."""
    import ui.widgets
    from core.services.users import LOCAL_USER
    from ui import navigation

    routed: list[bool] = []
    real = ui.widgets.language_switch
    monkeypatch.setattr(
        ui.widgets, "language_switch", lambda keep: (routed.append(navigation._ROUTED.get()), real(keep))
    )
    character = seed(app_db, LOCAL_USER, first_mes="Hello.")
    for page, query in [(None, {}), ("pages/create.py", {}), ("pages/library.py", {}),
                        ("pages/chat.py", {"character": character})]:  # fmt: skip
        at = new_app(page, **query)
        assert not at.exception and len(at.title) == 1, (page, [t.value for t in at.title])
    assert routed and all(routed), routed
    button = next(b for b in at.button if b.label == "New conversation")
    button.click().run()  # a click in a run that began in the old mode
    assert len([c for c in at.sidebar.radio[0].options]) == 2 and all(routed)


@pytest.mark.slow
def test_the_library_editor_lives_in_the_url(app_env, app_db) -> None:
    from core.services import characters
    from core.services.users import LOCAL_USER
    from tests.conftest import person

    mine = seed(app_db, LOCAL_USER)
    at = new_app("pages/library.py")
    at.button(key=f"edit_{mine}").click().run()
    assert at.query_params["edit"] == str(mine)
    assert any(b.label == "Back to the library" for b in at.button)
    at.text_input[0].set_value("Unsaved name")
    next(b for b in at.button if b.label == "Back to the library").click().run()
    assert "edit" not in at.query_params and at.text_input(key="library_query")
    reopened = new_app("pages/library.py", edit=mine)  # a link (or a reload) opens the editor again
    assert reopened.text_input[0].value == "Seraphina" and not reopened.warning

    bob = person(app_db, "bob")
    private = seed(app_db, bob, "Bob's own")
    shared = seed(app_db, bob, "Bob's shared")
    characters.share(app_db, bob, shared, True)
    for target, notice in [(987654, "not here"), (private, "not here"), (shared, "only its owner can change it")]:
        at = new_app("pages/library.py", edit=target)
        assert any(notice in w.value for w in at.warning), (target, [w.value for w in at.warning])
        assert "edit" not in at.query_params and not any(b.label == "Back to the library" for b in at.button)
        assert any(m.value == "**Seraphina**" for m in at.markdown)  # the library itself
    at = new_app("pages/library.py", edit="abc")
    assert not at.warning and any(m.value == "**Seraphina**" for m in at.markdown)


@pytest.mark.slow
def test_the_reply_settings_offer_what_the_core_accepts(app_env, app_db) -> None:
    from core.services.users import LOCAL_USER

    character = seed(app_db, LOCAL_USER, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    sliders, numbers = at.slider, at.number_input  # in the form's order
    for slider, name in zip(sliders, ["temperature", "top_p", "repetition_penalty"], strict=True):
        limit = LIMITS[name]
        assert (slider.min, slider.max, slider.step) == (limit.lowest, limit.highest, limit.step), name
    for number, name in zip(numbers, ["top_k", "max_new_tokens", "seed"], strict=True):
        assert (number.min, number.max) == (LIMITS[name].lowest, LIMITS[name].highest), name


# -- a deep link as the first request of a fresh server process ------------------------------------------
@pytest.mark.slow
@pytest.mark.browser
def test_a_deep_link_after_a_restart_runs_under_the_router(tmp_path: Path, tiny_checkpoint: Path, shared) -> None:
    """Right after `streamlit run Home.py` starts, a deep link is the first request: Streamlit would run the
    page file on its own (its automatic menu of file names). The page shows under the router: the app's
    menu, and the Library's editor or the conversation the link names."""
    from playwright.sync_api import expect, sync_playwright

    from bench.servers import free_port
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, Server, _seed, _wait_idle, server_env  # skips without

    env, _net_log = server_env(tmp_path, tiny_checkpoint)
    character = _seed(Path(env["REFSHEET_DATA_DIR"]), (shared / "images" / "seraphina_neutral.png").read_bytes(),
                      "Seraphina", first_mes="Hello from the glade.")  # fmt: skip
    srv = Server(env, free_port(), tmp_path / "server.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for path, shows in [(f"/library?edit={character}", "Back to the library"),
                                (f"/chat?character={character}", "Hello from the glade.")]:  # fmt: skip
                srv.start()  # a fresh process: this link is its first request
                page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
                page.goto(f"http://127.0.0.1:{srv.port}{path}")
                expect(page.get_by_text(shows).first).to_be_visible(timeout=60_000)
                _wait_idle(page)
                menu = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
                titles = [m.strip().splitlines()[-1] for m in menu]  # after each icon's name
                assert titles == ["Home", "Create", "Library", "Chat"], (path, menu)  # not the files' names
                assert path.split("?")[1] in page.url  # the link still says what is shown
                page.close()
                srv.kill()
            browser.close()
    finally:
        srv.kill()
