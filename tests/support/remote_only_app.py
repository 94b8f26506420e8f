"""Run in a venv built from requirements.txt alone (no torch, no transformers): every page renders
with the remote backend, and a reply streams from the server REFSHEET_API_BASE names.

Prints one JSON line of findings for tests/test_installs.py, which builds the venv and the server.
Plain AppTest, no pytest (that venv has only what a Community Cloud host installs)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from PIL import Image
    from streamlit.testing.v1 import AppTest

    from core.base.sheets import prepare_image
    from core.services import characters
    from core.services.users import LOCAL_USER
    from storage.db import open_database

    found: dict[str, object] = {
        "torch_installed": importlib.util.find_spec("torch") is not None,
        "transformers_installed": importlib.util.find_spec("transformers") is not None,
    }
    engine = open_database(f"sqlite:///{Path(os.environ['REFSHEET_DATA_DIR']) / 'refsheet.db'}")
    buffer = io.BytesIO()
    Image.new("RGB", (96, 128), (200, 120, 160)).save(buffer, format="PNG")
    sheet = prepare_image(buffer.getvalue())
    mira = characters.create(engine, LOCAL_USER, {"name": "Mira", "first_mes": "Hello, traveller."}, [sheet]).id
    errors: dict[str, list[str]] = {}
    for page in (None, "pages/create.py", "pages/library.py", "pages/chat.py"):
        at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=180)
        at.run()
        if page:
            if page.endswith("chat.py"):
                at.query_params.update({"character": str(mira)})
            at.switch_page(page).run()
        errors[page or "home"] = [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]
        found[f"title:{page or 'home'}"] = [t.value for t in at.title]
        if page and page.endswith("chat.py"):
            at.chat_input[0].set_value("Who are you?").run()
            found["chat"] = [(m.name, m.markdown[0].value if m.markdown else "") for m in at.chat_message]
    found["errors"] = errors
    server = os.environ.pop("REFSHEET_API_BASE")  # with no server named, nothing here can write a reply
    for backend in ("local", "gguf", ""):  # an engine this install lacks: Home says what to install
        os.environ["REFSHEET_BACKEND"] = backend
        at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=180)
        at.run()
        found[f"home:{backend or 'auto'}"] = [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]
    os.environ["REFSHEET_API_BASE"], os.environ["REFSHEET_BACKEND"] = (
        server,
        "",
    )  # a server's address alone: that server
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=180)
    at.run()
    found["home:address alone"] = [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]
    found["torch_loaded"] = "torch" in sys.modules or "transformers" in sys.modules
    print(json.dumps(found))


if __name__ == "__main__":
    main()
