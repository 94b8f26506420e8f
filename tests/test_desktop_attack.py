"""The desktop app against hostile or unlucky input (no GUI): strangers on the single-instance port, a
crashed window's leftovers, odd characters in what the first-run form saves, `~user` paths, a config folder
that cannot be written, a proxy in the environment, a server that cannot even be started, and odd paths in
the menu entry's Exec line.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import stat
import struct
import threading
import time
import urllib.request
from pathlib import Path

import pytest

try:
    import platformdirs  # noqa: F401 - the desktop's requirements are installed
except ImportError:
    if os.environ.get("REFSHEET_REQUIRE_DESKTOP"):
        pytest.fail("the desktop tests need: pip install -r requirements-desktop.txt", pytrace=False)
    pytest.skip("needs pip install -r requirements-desktop.txt", allow_module_level=True)

pytestmark = pytest.mark.desktop


# -- One window per data folder -----------------------------------------------------------------------
def _port(folder: Path) -> int:
    return int(json.loads((folder / "window.json").read_text())["port"])


def test_strangers_on_the_instance_port_do_not_stop_second_launches(tmp_path: Path) -> None:
    from desktop.instance import Instance, tell_running

    first = Instance(tmp_path)
    assert first.claim()
    first.listen(lambda message: {"ok": True, "do": message.get("do")})
    try:
        port = _port(tmp_path)
        silent = socket.create_connection(("127.0.0.1", port))  # connects and says nothing, for ever
        too_long = socket.create_connection(("127.0.0.1", port))  # a reply far longer than a digest
        too_long.recv(100)
        too_long.sendall(struct.pack("!i", 1_000_000))
        rude = socket.create_connection(("127.0.0.1", port))  # hangs up with a reset, unread data and all
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.close()
        time.sleep(0.3)
        assert tell_running(tmp_path, {"do": "show"}, timeout=3) == {"ok": True, "do": "show"}
        silent.close()  # unread challenge: a reset for the listener
        too_long.close()
        time.sleep(0.3)
        assert tell_running(tmp_path, {"do": "setup"}, timeout=3) == {"ok": True, "do": "setup"}
    finally:
        first.release()


def test_a_message_that_is_not_an_object_is_dropped_and_the_window_keeps_listening(tmp_path: Path) -> None:
    from multiprocessing.connection import Client

    from desktop.instance import Instance, tell_running

    first = Instance(tmp_path)
    assert first.claim()
    first.listen(lambda message: {"ok": True, "do": message.get("do")})
    try:
        info = json.loads((tmp_path / "window.json").read_text())
        with Client(("127.0.0.1", info["port"]), authkey=bytes.fromhex(info["key"])) as conn:  # another version
            conn.send_bytes(b'["show"]')
            with contextlib.suppress(EOFError, OSError):
                assert not conn.poll(2) or not conn.recv_bytes()  # no answer, at most a hang-up
        assert tell_running(tmp_path, {"do": "show"}, timeout=3) == {"ok": True, "do": "show"}
    finally:
        first.release()


def test_a_crashed_windows_window_json_goes_when_the_folder_is_claimed_again(tmp_path: Path) -> None:
    from desktop.instance import Instance, holder

    with socket.socket() as squatter:  # the old port, now some other program's, which never answers
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        (tmp_path / "window.json").write_text(json.dumps({"port": squatter.getsockname()[1], "pid": 1, "key": "00"}))
        starting = Instance(tmp_path)
        assert starting.claim()
        try:
            assert holder(tmp_path) == {}  # a second launch now waits for this window's own
        finally:
            starting.release()


# -- What the first-run form saves -----------------------------------------------------------------------
def test_a_choice_with_an_emoji_or_a_del_in_it_is_read_back(tmp_path: Path) -> None:
    from desktop.config import Choice, save_choice, saved_choice, saved_secrets

    choice = Choice(backend="gguf", gguf_model="/home/you/模型/😀 gemma.gguf", gguf_mmproj='/m/"]\n[x]\nb = 1.gguf')
    save_choice(choice, {"HF_TOKEN": "hf_\x7f😀"}, tmp_path)
    assert saved_choice(tmp_path) == choice
    assert saved_secrets(tmp_path) == {"HF_TOKEN": "hf_\x7f😀"}


def test_a_path_for_a_user_this_computer_does_not_have_is_not_found_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from desktop.config import server_environment
    from desktop.firstrun import check

    both = {"gguf": True, "local": True}
    for form in ({"way": "folder", "folder": "~no-such-user-here/gemma"},
                 {"way": "gguf_files", "gguf_model": "~no-such-user-here/m.gguf"}):  # fmt: skip
        with pytest.raises(ValueError, match="no-such-user-here"):
            check(form, available=both)
    env = {"REFSHEET_MODEL": "~no-such-user-here/gemma", "REFSHEET_DESKTOP_CONFIG_DIR": str(tmp_path / "config"),
           "REFSHEET_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    assert server_environment(env, cwd=tmp_path)["REFSHEET_MODEL"] == "~no-such-user-here/gemma"


def test_a_config_folder_that_cannot_be_written_is_said_on_the_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from desktop.firstrun import FirstRunApi

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("REFSHEET_DESKTOP_CONFIG_DIR", str(tmp_path / "a-file" / "config"))  # root or not
    answer = FirstRunApi("en").save({"way": "server", "api_base": "http://localhost:11434/v1", "api_model": "m"})
    assert "a-file" in answer.get("error", ""), answer
    answer = FirstRunApi("zh").save({"way": "server", "api_base": "http://localhost:11434/v1", "api_model": "m"})
    assert "a-file" in answer.get("error", "") and "firstrun.error" not in answer["error"], answer


# -- The server process ---------------------------------------------------------------------------------------
class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/_stcore/health" else 404)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class _Running:
    pid = 0

    def poll(self) -> None:
        return None


def test_the_health_check_goes_straight_to_the_server_whatever_http_proxy_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from desktop.server import ServerProcess

    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's own opener reads the proxy anew
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # a proxy that is not there
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        server = ServerProcess({}, tmp_path / "server.log")
        server.port, server.proc = httpd.server_address[1], _Running()  # type: ignore[assignment]
        try:
            assert server._wait_until_answering(3)
        finally:
            server.proc = None
            httpd.shutdown()


def test_a_server_that_cannot_even_be_started_is_a_server_failure_with_the_reason_in_its_log(tmp_path: Path) -> None:
    from desktop.server import ServerFailed, ServerProcess

    server = ServerProcess({**os.environ, "REFSHEET_API_KEY": "sk-\0pasted"}, tmp_path / "logs" / "server.log")
    with pytest.raises(ServerFailed, match="null byte"):
        server.start(timeout=5)
    assert not server.running()


@pytest.mark.slow
def test_a_base_path_in_the_users_own_streamlit_config_does_not_hide_the_server(tmp_path: Path) -> None:
    """A `baseUrlPath` in ~/.streamlit/config.toml (left from another Streamlit app) would move the app
    and its health check under it, and the window would wait for a server that never answers."""
    from desktop.server import ServerProcess

    home = tmp_path / "home"
    (home / ".streamlit").mkdir(parents=True)
    (home / ".streamlit" / "config.toml").write_text('[server]\nbaseUrlPath = "elsewhere"\n')
    env = {**os.environ, "HOME": str(home), "REFSHEET_DATA_DIR": str(tmp_path / "data"),
           "REFSHEET_BACKEND": "openai", "REFSHEET_API_BASE": "http://127.0.0.1:9/v1"}  # fmt: skip
    server = ServerProcess(env, tmp_path / "logs" / "server.log")
    try:
        url = server.start(timeout=90)
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as answer:
            assert answer.status == 200
    finally:
        server.stop()


def test_a_secrets_file_left_half_written_is_made_anew_for_this_user_only(tmp_path: Path) -> None:
    from desktop.config import Choice, save_choice

    left = tmp_path / "secrets.tmp"
    left.write_text("old")
    left.chmod(0o644)  # another program's, or an older version's: readable by everyone
    save_choice(Choice(backend="openai", api_base="http://127.0.0.1:9/v1"), {"REFSHEET_API_KEY": "sk-new"}, tmp_path)
    assert stat.S_IMODE((tmp_path / "secrets.toml").stat().st_mode) == 0o600
    assert "sk-new" in (tmp_path / "secrets.toml").read_text() and not left.exists()


# -- The menu entry ---------------------------------------------------------------------------------------------
def _exec_argv(entry: str) -> list[str]:
    """The Exec line as a launcher reads it (freedesktop Desktop Entry 1.5): the string value's escapes,
    then the quoting, then the field codes (only `%%` may appear here)."""
    raw = next(line[len("Exec=") :] for line in entry.splitlines() if line.startswith("Exec="))
    escapes = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    value, i = "", 0
    while i < len(raw):
        if raw[i] == "\\":
            assert raw[i + 1] in escapes, f"not a string escape: {raw[i : i + 2]!r} in {raw!r}"
            value, i = value + escapes[raw[i + 1]], i + 2
        else:
            value, i = value + raw[i], i + 1
    args, word, quoted, i = [], "", False, 0
    while i < len(value):
        ch = value[i]
        if quoted and ch == "\\":
            assert value[i + 1] in '"`$\\', f"not a quoting escape: {value[i : i + 2]!r}"
            word, i = word + value[i + 1], i + 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == " " and not quoted:
            args.append(word)
            word = ""
        else:
            assert quoted or ch not in "\t\n\"'\\><~|&;$*?#()`", f"unquoted reserved {ch!r} in {value!r}"
            word += ch
        i += 1
    args.append(word)
    for arg in args:
        assert "%" not in arg.replace("%%", ""), f"a field code in {arg!r}"
    return [arg.replace("%%", "%") for arg in args]


@pytest.mark.parametrize(
    "program",
    ["/home/you/My Apps/venv/bin/python", "/home/you/100%f/venv/bin/python", '/home/you/say "hi"/python',
     "/home/you/a\\b/python", "/home/you/$HOME/`x`/python", "/home/you/it's/python"],
)  # fmt: skip
def test_the_menu_entry_starts_this_python_from_an_odd_folder(program: str) -> None:
    from desktop.system import desktop_entry

    assert _exec_argv(desktop_entry([program, "-m", "desktop"])) == [program, "-m", "desktop"]
