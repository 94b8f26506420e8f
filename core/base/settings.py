"""One settings object, read from the environment and `.streamlit/secrets.toml`.

Why not `st.secrets`: `core/` stays plain Python, so tests, the benchmark and the pages all read the
same values the same way. Precedence: environment variable > secrets file > default. Every default
works with no configuration at all.
"""

from __future__ import annotations

import hashlib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core.base.i18n import Text

QUANTIZATIONS: tuple[str, ...] = ("4bit", "8bit", "none")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
DTYPES: tuple[str, ...] = ("auto", "bfloat16", "float32")
BACKENDS: tuple[str, ...] = ("local", "openai", "gguf")
AUTO = "auto"  # no backend named: `core.model.registry` picks one for this machine

DEFAULT_SECRETS_FILES = (Path(".streamlit/secrets.toml"), Path.home() / ".streamlit" / "secrets.toml")


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable and the fix. With
    a `text` it is said in the reader's language too."""

    def __init__(self, message: str, text: Text | None = None) -> None:
        super().__init__(message)
        self.text = text


SECONDS_AT_MOST = 86_400.0  # a day: any longer wait is a mistake (and overflows a socket's timeout)


@dataclass(frozen=True)
class Settings:
    """Everything the app can be told from outside. Field metadata names the environment variable, and
    marks with `backend` the fields whose change makes a new backend (see `backend_key`): every field
    that `core/model/` reads (a test checks it), so a changed token or server makes a new one."""

    backend: str = field(default=AUTO, metadata={"env": "REFSHEET_BACKEND", "backend": True})
    model_id: str = field(default="google/gemma-3-4b-it", metadata={"env": "REFSHEET_MODEL", "backend": True})
    quantization: str = field(default="4bit", metadata={"env": "REFSHEET_QUANTIZATION", "backend": True})
    device: str = field(default="auto", metadata={"env": "REFSHEET_DEVICE", "backend": True})
    dtype: str = field(default="auto", metadata={"env": "REFSHEET_DTYPE", "backend": True})
    data_dir: Path = field(default=Path("data"), metadata={"env": "REFSHEET_DATA_DIR", "backend": True})
    database_url: str = field(default="", metadata={"env": "DATABASE_URL"})
    hf_token: str | None = field(default=None, metadata={"env": "HF_TOKEN", "backend": True}, repr=False)
    max_upload_mb: float = field(default=20.0, metadata={"env": "REFSHEET_MAX_UPLOAD_MB"})
    max_pixels: int = field(default=40_000_000, metadata={"env": "REFSHEET_MAX_PIXELS"})
    max_image_side: int = field(default=2048, metadata={"env": "REFSHEET_MAX_IMAGE_SIDE"})
    thumbnail_side: int = field(default=256, metadata={"env": "REFSHEET_THUMBNAIL_SIDE"})
    context_tokens: int = field(default=0, metadata={"env": "REFSHEET_CONTEXT_TOKENS", "backend": True})
    kv_cache_mb: int = field(default=0, metadata={"env": "REFSHEET_KV_CACHE_MB", "backend": True})
    prefix_cache_mb: int = field(default=2048, metadata={"env": "REFSHEET_PREFIX_CACHE_MB", "backend": True})
    preload: bool = field(default=False, metadata={"env": "REFSHEET_PRELOAD"})
    offline: bool = field(default=False, metadata={"env": "HF_HUB_OFFLINE", "backend": True})
    # The remote backend: any OpenAI-compatible server.
    api_base: str = field(default="", metadata={"env": "REFSHEET_API_BASE", "backend": True})
    api_key: str | None = field(default=None, metadata={"env": "REFSHEET_API_KEY", "backend": True}, repr=False)
    api_model: str = field(default="", metadata={"env": "REFSHEET_API_MODEL", "backend": True})
    api_image_side: int = field(default=896, metadata={"env": "REFSHEET_API_IMAGE_SIDE", "backend": True})
    api_image_tokens: int = field(default=256, metadata={"env": "REFSHEET_API_IMAGE_TOKENS", "backend": True})
    api_timeout: float = field(default=600.0, metadata={"env": "REFSHEET_API_TIMEOUT", "backend": True})
    # A server that falls silent mid-reply: the reply ends, unfinished, after this many quiet seconds.
    api_stall_seconds: float = field(default=30.0, metadata={"env": "REFSHEET_API_STALL_SECONDS", "backend": True})
    # The llama.cpp backend: a Gemma 3 GGUF and its vision projector (mmproj), local files or from the hub.
    gguf_model: str = field(default="", metadata={"env": "REFSHEET_GGUF_MODEL", "backend": True})
    gguf_mmproj: str = field(default="", metadata={"env": "REFSHEET_GGUF_MMPROJ", "backend": True})
    gguf_repo: str = field(
        default="ggml-org/gemma-3-4b-it-GGUF", metadata={"env": "REFSHEET_GGUF_REPO", "backend": True}
    )
    gguf_file: str = field(default="gemma-3-4b-it-Q4_K_M.gguf", metadata={"env": "REFSHEET_GGUF_FILE", "backend": True})
    gguf_mmproj_file: str = field(
        default="mmproj-model-f16.gguf", metadata={"env": "REFSHEET_GGUF_MMPROJ_FILE", "backend": True}
    )
    gguf_threads: int = field(default=0, metadata={"env": "REFSHEET_GGUF_THREADS", "backend": True})  # 0: per core
    # Teams (with sign-in): comma-separated lists of emails and domains.
    allowed_emails: str = field(default="", metadata={"env": "REFSHEET_ALLOWED_EMAILS"})
    allowed_domains: str = field(default="", metadata={"env": "REFSHEET_ALLOWED_DOMAINS"})
    admins: str = field(default="", metadata={"env": "REFSHEET_ADMINS"})
    # Issuers whose email claim counts without `email_verified` (Microsoft Entra never sends it).
    trusted_email_issuers: str = field(default="", metadata={"env": "REFSHEET_TRUSTED_EMAIL_ISSUERS"})

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise SettingsError(
                f"REFSHEET_QUANTIZATION must be one of {', '.join(QUANTIZATIONS)}, not {self.quantization!r}."
            )
        if self.dtype not in DTYPES:
            raise SettingsError(f"REFSHEET_DTYPE must be one of {', '.join(DTYPES)}, not {self.dtype!r}.")
        if self.backend not in (*BACKENDS, AUTO):
            raise SettingsError(
                f"REFSHEET_BACKEND must be one of {', '.join(BACKENDS)} (or {AUTO}: chosen for this machine), "
                f"not {self.backend!r}."
            )
        if self.device not in DEVICES:
            raise SettingsError(f"REFSHEET_DEVICE must be one of {', '.join(DEVICES)}, not {self.device!r}.")
        for name in (
            "max_upload_mb",
            "max_pixels",
            "max_image_side",
            "thumbnail_side",
            "api_image_side",
            "api_image_tokens",
            "api_timeout",
            "api_stall_seconds",
        ):
            value, env = getattr(self, name), _env_name(name)
            if name in ("api_timeout", "api_stall_seconds"):  # waits: a day at most (nan and inf are no wait)
                if not (math.isfinite(value) and 0 < value <= SECONDS_AT_MOST):
                    said = Text("settings.error.seconds", {"name": env, "most": f"{SECONDS_AT_MOST:g}",
                                                           "value": str(value)})  # fmt: skip
                    raise SettingsError(f"{env} must be a number of seconds above 0 and at most "
                                        f"{SECONDS_AT_MOST:g}, not {value!r}.", said)  # fmt: skip
            elif not (math.isfinite(value) and value > 0):  # nan is not above 0 either
                said = Text("settings.error.positive", {"name": env, "value": str(value)})
                raise SettingsError(f"{env} must be positive, not {value!r}.", said)
        if self.gguf_threads < 0:
            raise SettingsError("REFSHEET_GGUF_THREADS must be 0 (one per physical core) or more.")
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'refsheet.db'}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def backend_key(self) -> tuple[object, ...]:
        """What tells one backend configuration from another: the fields marked `backend`, each a
        plain value; a secret (a field kept out of `repr`) only as a short hash, never in clear."""
        key: list[object] = []
        for f in fields(self):
            if f.metadata.get("backend"):
                value = getattr(self, f.name)
                if not f.repr:
                    value = hashlib.sha256((value or "").encode()).hexdigest()[:16]
                key.append((f.name, str(value) if isinstance(value, Path) else value))
        return tuple(key)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values changed (tests and the benchmark use this)."""
        return replace(self, **changes)


def _env_name(field_name: str) -> str:
    return next(f.metadata["env"] for f in fields(Settings) if f.name == field_name)


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    text = str(raw).strip()
    try:
        if kind in (int, "int"):
            return int(text)
        if kind in (float, "float"):
            return float(text)
        if kind in (bool, "bool"):
            return text.lower() in ("1", "true", "yes", "on")
        if kind in (Path, "Path"):
            return Path(text).expanduser()
    except ValueError as exc:
        said = Text("settings.error.number", {"name": _env_name(name), "value": text[:80]})
        raise SettingsError(f"{_env_name(name)} must be a number, not {text!r}.", said) from exc
    return text


def read_secrets(paths: tuple[Path, ...] = DEFAULT_SECRETS_FILES) -> dict[str, Any]:
    """Top-level keys of the first readable secrets files (project file wins over the user's)."""
    merged: dict[str, Any] = {}
    for path in reversed(paths):
        if path.is_file():
            with path.open("rb") as fh:
                merged.update({k: v for k, v in tomllib.load(fh).items() if not isinstance(v, dict)})
    return merged


def load_settings(environ: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None) -> Settings:
    """Build `Settings` from the environment and the secrets file."""
    environ = os.environ if environ is None else environ
    secrets = read_secrets() if secrets is None else secrets
    values: dict[str, Any] = {}
    for f in fields(Settings):
        env = f.metadata["env"]
        raw = environ.get(env)
        if raw is None or raw == "":
            raw = secrets.get(env)
        if raw is None or raw == "":
            continue
        kind = f.type.split(" |")[0] if isinstance(f.type, str) else f.type
        values[f.name] = _coerce(f.name, kind, raw)
    if values.get("backend", AUTO) == AUTO:  # a model named for one engine picks that engine
        if "model_id" in values:
            values["backend"] = "local"
        elif values.keys() & {"gguf_model", "gguf_repo", "gguf_file"}:
            values["backend"] = "gguf"
        elif "api_base" in values:  # a model server's address: that server
            values["backend"] = "openai"
    return Settings(**values)
