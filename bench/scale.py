"""Page run time as the data grows: the Library at 10 / 100 / 1,000 characters and a click in the Chat
at 20 / 200 / 2,000 messages.

    python -m bench.scale                 # the full table (seeding 1,000 characters takes a minute)
    python -m bench.scale --quick         # 10 / 100 characters, 20 / 200 messages

The real pages run in Streamlit's AppTest (what a browser's click makes the server do: one script
run, widgets serialised) against a real SQLite file. Characters carry realistic art: the shared
character picture at 600×920, as users upload it, each stored as its own row. Messages are a few
sentences each. The model is never loaded (pages do not load it to render). Each figure is the
median of several reruns after a first, warm-up run. Prints Markdown; writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
ART = ROOT.parent / "shared" / "images" / "seraphina_neutral.png"
RESULTS = ROOT / "bench" / "results" / "scale.json"
LINE = (
    "*She tilts her head, the lantern light catching the silver thread in her sleeve.* "
    "I remember the road through the marsh, and the bridge that was never finished. "
)


def _art() -> bytes:
    """The shared art at the size a user's sheet usually has (600×920), as PNG."""
    import io

    picture = Image.open(ART).convert("RGB").resize((600, 920), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def _timed_runs(at, repeats: int, click=None) -> float:
    """Median seconds of one script run (after a warm-up run), a click being `click(at)` if given."""
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        (click(at) if click else at).run()
        times.append(time.perf_counter() - started)
        assert not at.exception, at.exception
    return statistics.median(times[1:])


def new_app(page: str, **query: object):
    """A browser session opening `page` (AppTest of the real Home.py router)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=300)
    at.query_params.update({k: str(v) for k, v in query.items()})
    at.run()
    at.switch_page(page).run()
    return at


@contextlib.contextmanager
def _fresh_data() -> Iterator[tuple[Path, Engine]]:
    """An empty data folder the app will use (REFSHEET_DATA_DIR), and an engine on its database."""
    from storage.db import make_engine, migrate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        os.environ["REFSHEET_DATA_DIR"] = str(data)
        os.environ.pop("DATABASE_URL", None)
        engine = make_engine(f"sqlite:///{data / 'refsheet.db'}")
        migrate(engine)
        try:
            yield data, engine
        finally:
            engine.dispose()


def library(sizes: list[int], repeats: int) -> list[dict]:
    from core.base.sheets import prepare_image
    from core.services import characters
    from core.services.users import LOCAL_USER

    sheet = prepare_image(_art(), "sheet.png")
    rows = []
    with _fresh_data() as (data, engine):
        have = 0
        for size in sizes:
            for n in range(have, size):
                characters.create(engine, LOCAL_USER, {"name": f"Character {n}", "notes": f"Number {n}."}, [sheet])
            have = size
            at = new_app("pages/library.py")
            page = _timed_runs(at, repeats)
            queries = itertools.cycle([f"Character {size - 1}", "Number 7", "nobody", ""])
            search = _timed_runs(at, repeats, lambda at, q=queries: at.text_input(key="library_query").input(next(q)))
            megabytes = (data / "refsheet.db").stat().st_size / 1e6
            rows.append({"characters": size, "page_s": page, "search_s": search, "database_mb": megabytes})
            print(f"  library, {size} characters: {page:.3f} s a run, search {search:.3f} s", file=sys.stderr)
    return rows


def chat(sizes: list[int], repeats: int) -> list[dict]:
    from core.base.sheets import prepare_image
    from core.services import characters, conversations
    from core.services.users import LOCAL_USER
    from storage import conversations as convs
    from storage.db import session_scope
    from storage.tables import Role

    sheet = prepare_image(_art(), "sheet.png")
    rows = []
    with _fresh_data() as (_data, engine):
        character = characters.create(engine, LOCAL_USER, {"name": "Sera", "first_mes": "Hello."}, [sheet]).id
        chat_id = conversations.start(engine, LOCAL_USER, character).id
        have = 1  # the greeting
        for size in sizes:
            with session_scope(engine) as session:
                for n in range(have, size):
                    role = Role.USER if n % 2 == 0 else Role.ASSISTANT  # ends on a reply: nothing to write
                    convs.append_message(session, chat_id, role, f"{n}. " + LINE * (1 + n % 3))
            have = size
            at = new_app("pages/chat.py", character=character, conversation=chat_id)
            click = _timed_runs(at, repeats)  # any click outside a fragment reruns the page
            rows.append({"messages": size, "click_s": click})
            print(f"  chat, {size} messages: {click:.3f} s a click", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the two smaller sizes only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before, after)")
    args = parser.parse_args()
    from bench.checkpoints import build_tiny

    with tempfile.TemporaryDirectory() as models:
        os.environ["REFSHEET_MODEL"] = str(build_tiny(Path(models) / "tiny"))  # configured, never loaded
        os.environ["REFSHEET_QUANTIZATION"] = "none"
        libraries = library([10, 100] if args.quick else [10, 100, 1000], args.repeats)
        chats = chat([20, 200] if args.quick else [20, 200, 2000], args.repeats)

    print("| characters in the library | Library page, s a run | search, s a keystroke | database MB |")
    print("|---:|---:|---:|---:|")
    for row in libraries:
        print(f"| {row['characters']:,} | {row['page_s']:.3f} | {row['search_s']:.3f} | {row['database_mb']:.0f} |")
    print()
    print("| messages in the conversation | Chat page, s a click |")
    print("|---:|---:|")
    for row in chats:
        print(f"| {row['messages']:,} | {row['click_s']:.3f} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    runs[args.label or "latest"] = {"library": libraries, "chat": chats}
    RESULTS.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
