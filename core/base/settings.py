"""One settings object, read from the environment and `.streamlit/secrets.toml`.

Why not `st.secrets`: `core/` stays plain Python, so tests, the benchmark and the pages all read the
same values the same way. Precedence: environment variable > secrets file > default. Every default
works with no configuration at all.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

Quantization = Literal["4bit", "8bit", "none"]
QUANTIZATIONS: tuple[str, ...] = ("4bit", "8bit", "none")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DTYPES: tuple[str, ...] = ("auto", "bfloat16", "float32")
BACKENDS: tuple[str, ...] = ("local", "openai")

DEFAULT_SECRETS_FILES = (Path(".streamlit/secrets.toml"), Path.home() / ".streamlit" / "secrets.toml")


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable and the fix."""


@dataclass(frozen=True)
class Settings:
    """Everything the app can be told from outside. Field metadata names the environment variable."""

    backend: str = field(default="local", metadata={"env": "REFSHEET_BACKEND"})
    model_id: str = field(default="google/gemma-3-4b-it", metadata={"env": "REFSHEET_MODEL"})
    quantization: str = field(default="4bit", metadata={"env": "REFSHEET_QUANTIZATION"})
    device: str = field(default="auto", metadata={"env": "REFSHEET_DEVICE"})
    dtype: str = field(default="auto", metadata={"env": "REFSHEET_DTYPE"})
    data_dir: Path = field(default=Path("data"), metadata={"env": "REFSHEET_DATA_DIR"})
    database_url: str = field(default="", metadata={"env": "DATABASE_URL"})
    hf_token: str | None = field(default=None, metadata={"env": "HF_TOKEN"}, repr=False)
    max_upload_mb: float = field(default=20.0, metadata={"env": "REFSHEET_MAX_UPLOAD_MB"})
    max_pixels: int = field(default=40_000_000, metadata={"env": "REFSHEET_MAX_PIXELS"})
    max_image_side: int = field(default=2048, metadata={"env": "REFSHEET_MAX_IMAGE_SIDE"})
    thumbnail_side: int = field(default=256, metadata={"env": "REFSHEET_THUMBNAIL_SIDE"})
    context_tokens: int = field(default=0, metadata={"env": "REFSHEET_CONTEXT_TOKENS"})
    kv_cache_mb: int = field(default=0, metadata={"env": "REFSHEET_KV_CACHE_MB"})
    prefix_cache_mb: int = field(default=2048, metadata={"env": "REFSHEET_PREFIX_CACHE_MB"})
    preload: bool = field(default=False, metadata={"env": "REFSHEET_PRELOAD"})
    offline: bool = field(default=False, metadata={"env": "HF_HUB_OFFLINE"})
    # The remote backend: any OpenAI-compatible server.
    api_base: str = field(default="", metadata={"env": "REFSHEET_API_BASE"})
    api_key: str | None = field(default=None, metadata={"env": "REFSHEET_API_KEY"}, repr=False)
    api_model: str = field(default="", metadata={"env": "REFSHEET_API_MODEL"})
    api_image_side: int = field(default=896, metadata={"env": "REFSHEET_API_IMAGE_SIDE"})
    api_image_tokens: int = field(default=256, metadata={"env": "REFSHEET_API_IMAGE_TOKENS"})
    api_timeout: float = field(default=600.0, metadata={"env": "REFSHEET_API_TIMEOUT"})
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
        if self.backend not in BACKENDS:
            raise SettingsError(f"REFSHEET_BACKEND must be one of {', '.join(BACKENDS)}, not {self.backend!r}.")
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
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_name(name)} must be positive.")
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'refsheet.db'}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

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
        raise SettingsError(f"{_env_name(name)} must be a number, not {text!r}.") from exc
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
    return Settings(**values)
