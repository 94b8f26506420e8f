"""What each deployment really installs, resolved against PyPI alone (as a user's machine does: no local
wheel folder, no pip configuration), and a Community-Cloud-style install that runs without torch.

Marked slow: each resolution asks PyPI (tens of seconds); the remote-only venv is built once per
version of requirements.txt and kept (REFSHEET_INSTALL_CACHE, else the pytest cache folder)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

HEAVY = re.compile(r"^(torch|transformers|accelerate|bitsandbytes|triton|nvidia-.*|cuda-.*)$", re.IGNORECASE)


def resolve(requirements: str, tmp_path: Path) -> dict[str, str]:
    """name → version of everything `pip install -r requirements` would install on a fresh Linux x86-64
    machine from PyPI (and any index the file itself names)."""
    report = tmp_path / f"{requirements}.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--ignore-installed", "--dry-run", "--quiet",
         "--retries", "0", "--timeout", "10", "--report", str(report), "-r", str(ROOT / requirements)],
        check=True, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    found = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    print(f"\n{requirements}: {len(found)} distributions")
    print("  " + ", ".join(f"{name}=={version}" for name, version in sorted(found.items())))
    return found


def test_a_model_server_deployment_installs_no_torch(tmp_path: Path) -> None:
    """requirements.txt is what Streamlit Community Cloud installs (and a team's app replicas)."""
    found = resolve("requirements.txt", tmp_path)
    assert "streamlit" in found and "openai" in found and "psycopg" in found
    assert [name for name in found if HEAVY.match(name)] == []


def test_a_laptop_install_gets_llama_cpp_and_no_cuda(tmp_path: Path) -> None:
    found = resolve("requirements-laptop.txt", tmp_path)
    assert "llama-cpp-python" in found or "llama_cpp_python" in found
    assert [name for name in found if HEAVY.match(name)] == []  # no torch, no CUDA libraries


def test_the_gpu_install_gets_torch_and_transformers(tmp_path: Path) -> None:
    found = resolve("requirements-local.txt", tmp_path)
    assert {"torch", "transformers", "bitsandbytes"} <= set(found)  # from PyPI on Linux: the CUDA build


def _remote_only_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with requirements.txt alone (this machine's pip settings, for speed), built once per its
    content and kept."""
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("REFSHEET_INSTALL_CACHE") or tmp_path_factory.getbasetemp().parent / "installs")
    venv = cache / f"remote-{digest}"
    python = venv / "bin" / "python"
    if not (venv / "ok").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements.txt")], check=True,
                       timeout=1200)  # fmt: skip
        (venv / "ok").write_text("built\n")
    return python


def test_a_remote_only_install_runs_every_page_and_streams_a_reply(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, openai_server: str, tiny_checkpoint: Path
) -> None:
    python = _remote_only_venv(tmp_path_factory)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFSHEET_", "PYTHON"))}
    env.update(REFSHEET_DATA_DIR=str(tmp_path / "data"), REFSHEET_BACKEND="openai", REFSHEET_API_BASE=openai_server,
               REFSHEET_API_MODEL=str(tiny_checkpoint), HF_HUB_OFFLINE="1")  # fmt: skip
    done = subprocess.run([str(python), str(ROOT / "tests" / "support" / "remote_only_app.py")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert not found["torch_installed"] and not found["transformers_installed"]
    assert all(errors == [] for errors in found["errors"].values()), found["errors"]
    assert all(len(found[f"title:{page}"]) == 1 for page in ("home", "pages/create.py", "pages/library.py"))
    user, reply = found["chat"][-2:]
    assert user == ["user", "Who are you?"] and reply[0] == "assistant" and reply[1].strip()  # streamed, saved
    assert not found["torch_loaded"]
    assert any("pip install -r requirements-local.txt" in e for e in found["home:local"]), found["home:local"]
    assert any("pip install -r requirements-laptop.txt" in e for e in found["home:gguf"]), found["home:gguf"]
    assert any("No model engine is installed here" in e for e in found["home:auto"]), found["home:auto"]
    assert found["home:address alone"] == [], found["home:address alone"]  # REFSHEET_API_BASE alone: the server
