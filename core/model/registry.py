"""Which backends there are, by the name `REFSHEET_BACKEND` gives them; only the chosen one is imported.

A new backend is a package under `core/model/backends/` and a line here: the protocol module
(`core.model.backend`) never imports an implementation, and a server-backed app never imports torch.
With no backend named (`auto`), `choose` picks the in-process engine that serves this machine best.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from importlib import import_module
from importlib.util import find_spec

from core.base.settings import AUTO, Settings
from core.model.backend import Backend, BackendError, BackendStatus, Progress, ReplyRequest, ReplyStream
from core.model.prompts import CharacterPrompt

log = logging.getLogger(__name__)

BACKENDS: dict[str, str] = {  # name -> "module:class"
    "local": "core.model.backends.gemma.backend:GemmaBackend",
    "openai": "core.model.backends.openai.backend:OpenAIBackend",
    "gguf": "core.model.backends.gguf.backend:GGUFBackend",
}


MISSING = "missing"


@functools.cache
def _problem(module: str) -> str | None:
    """Why `module` cannot be used here: MISSING (not installed), the error an installed one raised
    while loading (a wheel built for another machine, a library it cannot find), or None."""
    if find_spec(module) is None:
        return MISSING
    try:
        import_module(module)
    except Exception as exc:  # noqa: BLE001 - installed but broken here: said as such, never as "not installed"
        log.warning("%s is installed but cannot be loaded: %s", module, exc)
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def _importable(module: str) -> bool:
    return _problem(module) is None


def _installed(module: str) -> bool:
    return _problem(module) != MISSING


@functools.cache
def _cuda() -> bool:
    """Whether torch sees a CUDA GPU (asked only where torch is installed)."""
    if not _importable("torch"):
        return False
    return bool(import_module("torch").cuda.is_available())


def choose(settings: Settings) -> str:
    """The backend to use: the one the settings name, else (`auto`) transformers where there is a CUDA
    GPU (4-bit NF4 on the GPU), llama.cpp where it is installed and there is none (a laptop, a Mac: its
    4-bit kernels beat transformers on a CPU), and transformers otherwise."""
    if settings.backend != AUTO:
        return settings.backend
    if not _installed("llama_cpp") or _cuda():
        return "local"
    return "gguf"


NEEDS: dict[str, tuple[str, ...]] = {"local": ("torch", "transformers"), "gguf": ("llama_cpp",), "openai": ("openai",)}
INSTALL: dict[str, str] = {  # the requirement file that brings each backend's packages
    "local": "requirements-local.txt",
    "gguf": "requirements-laptop.txt",
    "openai": "requirements.txt",
}


def make_backend(settings: Settings) -> Backend:
    """The backend the settings name (or `choose` picks); nothing is loaded or contacted until needed.
    One whose packages are not installed is a backend that says which file to install (on every page,
    and where a reply was asked), never an import error."""
    name = choose(settings)
    problems = {package: _problem(package) for package in NEEDS[name]}
    missing = [package for package, why in problems.items() if why == MISSING]
    broken = [(package, why) for package, why in problems.items() if why not in (None, MISSING)]
    if missing:
        if settings.backend == AUTO:  # nothing was asked for, and no engine is here at all
            problem = BackendError("no_engine")
        else:
            problem = BackendError("not_installed", backend=name, packages=", ".join(missing), file=INSTALL[name])
        return Unavailable(problem)
    if broken:  # installed, but it will not load on this machine: installing it again is what helps
        package, reason = broken[0]
        return Unavailable(BackendError("cannot_load", backend=name, package=package, reason=reason,
                                        file=INSTALL[name]))  # fmt: skip
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(import_module(module), cls)(settings.with_(backend=name))


class Unavailable:
    """A backend whose packages are missing: every page says what to install; nothing else works."""

    def __init__(self, problem: BackendError) -> None:
        self.problem = problem

    @property
    def prepared(self) -> bool:
        return False

    def status(self) -> BackendStatus:
        return BackendStatus("failed", "", error=self.problem)

    def prepare(self, progress: Progress | None = None) -> None:
        raise self.problem

    def stream(self, request: ReplyRequest, stop: object = None, on_progress: object = None) -> ReplyStream:
        raise self.problem

    def count_tokens(self, request: ReplyRequest) -> int:
        raise self.problem

    def context_limit(self) -> int | None:
        return None

    def warm(self, tag: str, prefix: Callable[[], CharacterPrompt]) -> None:
        return None
