"""Where the desktop app keeps things, and the environment its server runs with.

- **Data** (the database, the prefix cache, the server's log): the per-user application-data folder
  (`platformdirs.user_data_dir("RefSheetChat")`: `~/.local/share/RefSheetChat` on Linux,
  `~/Library/Application Support/RefSheetChat` on macOS, `%LOCALAPPDATA%\\RefSheetChat` on Windows),
  unless `REFSHEET_DATA_DIR` (or `DATABASE_URL`) says otherwise.
- **The first-run choice** (which model, or which server): `desktop.toml` in the per-user config folder
  (`platformdirs.user_config_dir`), and the token or key, if one was given, beside it in `secrets.toml`,
  readable by the user only. Neither is ever part of the build.

The server is told everything through its environment, where the app's settings (`core.base.settings`) read
it. The environment the app was started with wins over the saved choice, so `REFSHEET_MODEL=… RefSheetChat`
works as it does for `streamlit run Home.py`.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs

from desktop import APP_NAME, app_root

# The settings that say which model answers: any of them set means the first-run screen is not needed.
MODEL_SETTINGS = (
    "REFSHEET_MODEL", "REFSHEET_BACKEND", "REFSHEET_API_BASE", "REFSHEET_GGUF_MODEL", "REFSHEET_GGUF_REPO",
)  # fmt: skip
# Settings that may name a file or folder: a relative one is made absolute (the server runs elsewhere).
PATH_SETTINGS = ("REFSHEET_MODEL", "REFSHEET_GGUF_MODEL", "REFSHEET_GGUF_MMPROJ")


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The data folder: REFSHEET_DATA_DIR (relative to where the app was started), or the per-user one."""
    environ = os.environ if environ is None else environ
    if given := environ.get("REFSHEET_DATA_DIR"):
        return Path(given).expanduser().resolve()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def logs_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The logs (`desktop.system`): the data folder's `logs/`."""
    return data_dir(environ) / "logs"


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if given := environ.get("REFSHEET_DESKTOP_CONFIG_DIR"):
        return Path(given).expanduser().resolve()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class Choice:
    """What the first-run screen saved. `backend` "gguf" (llama.cpp): `gguf_model` and `gguf_mmproj` are
    files, or `gguf_repo` with `gguf_file` and `gguf_mmproj_file` names a hub repository's; "local"
    (transformers): `model` is a folder or a hub id; "openai": `api_base` and `api_model` name a server.
    Secrets travel separately."""

    backend: str = "local"
    model: str = ""
    api_base: str = ""
    api_model: str = ""
    gguf_model: str = ""
    gguf_mmproj: str = ""
    gguf_repo: str = ""
    gguf_file: str = ""
    gguf_mmproj_file: str = ""

    def environment(self) -> dict[str, str]:
        if self.backend == "openai":
            return {
                "REFSHEET_BACKEND": "openai",
                "REFSHEET_API_BASE": self.api_base,
                "REFSHEET_API_MODEL": self.api_model,
            }
        if self.backend == "gguf" and self.gguf_model:
            return {"REFSHEET_BACKEND": "gguf", "REFSHEET_GGUF_MODEL": self.gguf_model,
                    "REFSHEET_GGUF_MMPROJ": self.gguf_mmproj}  # fmt: skip
        if self.backend == "gguf":
            return {
                "REFSHEET_BACKEND": "gguf",
                "REFSHEET_GGUF_REPO": self.gguf_repo,
                "REFSHEET_GGUF_FILE": self.gguf_file,
                "REFSHEET_GGUF_MMPROJ_FILE": self.gguf_mmproj_file,
            }
        return {"REFSHEET_BACKEND": "local", "REFSHEET_MODEL": self.model}


SECRET_NAMES = ("HF_TOKEN", "REFSHEET_API_KEY")


def _toml(values: Mapping[str, str]) -> str:
    """TOML basic strings by way of JSON's (the same escapes), but with non-ASCII characters as they are:
    JSON writes one beyond U+FFFF (an emoji in a folder's name) as two surrogate escapes, which TOML
    refuses, and the whole file would then be unreadable. DEL, which TOML forbids raw, is escaped."""

    def basic(value: str) -> str:
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")

    return "".join(f"{key} = {basic(value)}\n" for key, value in values.items())


def save_choice(choice: Choice, secrets: Mapping[str, str], folder: Path | None = None) -> Path:
    """Write the choice (and the secrets, readable by this user only); returns the choice's file."""
    folder = folder or config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "desktop.toml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# Written by RefSheet Chat's first-run screen.\n" + _toml(asdict(choice)), encoding="utf-8")
    os.replace(tmp, path)
    secret_file = folder / "secrets.toml"
    kept = {k: v for k, v in secrets.items() if k in SECRET_NAMES and v}
    if kept:
        temporary = secret_file.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)  # a file left there keeps its own permissions: made anew, 0600
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(_toml(kept))
        os.replace(temporary, secret_file)
    else:
        secret_file.unlink(missing_ok=True)
    return path


def saved_choice(folder: Path | None = None) -> Choice | None:
    path = (folder or config_dir()) / "desktop.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    known = {k: str(v) for k, v in raw.items() if k in Choice.__dataclass_fields__}
    return Choice(**known)


def saved_secrets(folder: Path | None = None) -> dict[str, str]:
    path = (folder or config_dir()) / "secrets.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {k: str(v) for k, v in raw.items() if k in SECRET_NAMES and v}


def _secrets_files_settings() -> dict[str, object]:
    """What the secrets files the server will read say (the app's own rules: `core.base.settings`)."""
    from core.base.settings import read_secrets

    return read_secrets((app_root() / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"))


def needs_first_run(environ: Mapping[str, str] | None = None) -> bool:
    """True when nothing says which model to use: no saved choice, no setting in the environment or
    in a secrets file. (Without any, the app would reach for the default hub id, which needs a token.)"""
    environ = os.environ if environ is None else environ
    if saved_choice(config_dir(environ)) is not None:
        return False
    if any(environ.get(name) for name in MODEL_SETTINGS):
        return False
    return not any(_secrets_files_settings().get(name) for name in MODEL_SETTINGS)


def _absolute_if_path(value: str, cwd: Path) -> str:
    """A model given as a relative folder is resolved against where the app was started (the server
    runs in the app's own folder); a hub id (`google/gemma-3-4b-it`) is left as it is, and so is a
    `~user/…` whose user this computer does not know (the server then says that it is not found)."""
    try:
        candidate = Path(value).expanduser()
    except RuntimeError:
        return value
    if not candidate.is_absolute() and (cwd / candidate).exists():
        return str((cwd / candidate).resolve())
    return str(candidate) if value.startswith("~") else value


def server_environment(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    """The server's environment: the app's own, plus the desktop defaults where it says nothing."""
    environ = dict(os.environ if environ is None else environ)
    cwd = cwd or Path.cwd()
    env = dict(environ)
    folder = config_dir(environ)
    choice = saved_choice(folder)
    if choice is not None:
        for key, value in choice.environment().items():
            if value and not environ.get(key):
                env[key] = value
    for key, value in saved_secrets(folder).items():
        env.setdefault(key, value)
    env["REFSHEET_DATA_DIR"] = str(data_dir(environ))
    for name in PATH_SETTINGS:
        if env.get(name):
            env[name] = _absolute_if_path(env[name], cwd)
    env.setdefault("REFSHEET_PRELOAD", "1")  # the model loads in the background once the window shows
    env.pop("STREAMLIT_SERVER_PORT", None)  # the desktop picks its own port
    return env
