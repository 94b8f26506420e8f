"""The remote backend, measured: the same 10-turn conversation through real OpenAI-compatible servers.

    python -m bench.remote           # realistic shapes: Gemma 3 270M text + full-size SigLIP via `transformers serve`
    python -m bench.remote --tiny    # the tiny random checkpoint, for a quick run

The app's own `OpenAIBackend` talks to each server, as in the app. Per server, two loops of the
conversation of `bench.turns` (a greeting, then nine questions; greedy, 24 new tokens a reply):
- "same prefix": what the app sends, the character prefix (instruction + sheet) byte-identical every
  turn, so a server's prefix cache can reuse it;
- "changed prefix": the baseline that defeats any server cache, re-sending everything with the
  prefix's first line changed every turn.
Servers: `transformers serve` with the realistic vision checkpoint (it keeps no cache between
requests), and llama-cpp-python's server with the real Gemma 3 270M GGUF (text only, so its prefix
has no sheet; it reuses the longest common prefix of the previous prompt) where that server is
installed (`--llamacpp-python`, or REFSHEET_LLAMACPP_PYTHON). Then the resident memory of the app's
process after one reply with each backend. Prints Markdown; writes bench/results/remote.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.checkpoints import _gguf_path, build_realistic, build_tiny
from bench.servers import free_port, running
from bench.turns import GREETING, PROFILE, QUESTIONS, square_sheet
from core.base.sampling import SamplerSettings
from core.base.settings import Settings
from core.base.sheets import Picture
from core.model.backend import ReplyRequest
from core.model.backends.openai.backend import OpenAIBackend
from core.model.prompts import CharacterPrompt, Turn, character_prompt, kickoff_line

ROOT = Path(__file__).resolve().parents[1]


def conversation(backend: OpenAIBackend, prefix: CharacterPrompt, sampler: SamplerSettings, vary: bool) -> list[dict]:
    """The 10 turns through the backend; `vary` changes the prefix's first line every turn."""
    history, rows = [Turn("assistant", GREETING)], []
    for turn, question in enumerate(QUESTIONS, 1):
        history.append(Turn("user", question))
        sent = replace(prefix, instruction=f"(Visit {turn}.)\n{prefix.instruction}") if vary else prefix
        stream = backend.stream(ReplyRequest(sent, tuple(history), sampler))
        text = "".join(stream)
        s = stream.stats
        rows.append({"turn": turn, "ttft_s": s.ttft_s, "prompt": s.prompt_tokens, "total_s": s.total_s,
                     "cached": s.prompt_tokens - s.prefilled_tokens})  # fmt: skip
        print(f"{'changed' if vary else 'same':>8} turn {turn:>2}: first token {s.ttft_s:.3f} s, "
              f"{s.prompt_tokens} prompt tokens", file=sys.stderr, flush=True)  # fmt: skip
        history.append(Turn("assistant", text))
    return rows


def both_loops(base: str, model: str, prefix: CharacterPrompt, sampler: SamplerSettings) -> dict:
    backend = OpenAIBackend(Settings(backend="openai", api_base=base, api_model=model))
    if (status := backend.status()).error is not None:  # connected (a text-only model is fine here)
        raise status.error
    same = conversation(backend, prefix, sampler, vary=False)
    changed = conversation(backend, prefix, sampler, vary=True)
    return {"same": same, "changed": changed, "turn10_ratio": changed[-1]["ttft_s"] / same[-1]["ttft_s"]}


def app_memory(env: dict[str, str]) -> float:
    """Resident MB of an app process (the pages and one reply, run by Streamlit's AppTest) with `env`."""
    probe = """
import os, psutil
from pathlib import Path
from streamlit.testing.v1 import AppTest
from core.services import characters
from core.base.sheets import prepare_image
from core.services.users import LOCAL_USER
from storage.db import make_engine, migrate
db = make_engine(f"sqlite:///{os.environ['REFSHEET_DATA_DIR']}/refsheet.db"); migrate(db)
art = Path(os.environ["BENCH_SHEET"]).read_bytes()
c = characters.create(db, LOCAL_USER, {"name": "Bench", "first_mes": "Hello."}, [prepare_image(art)])
at = AppTest.from_file("Home.py", default_timeout=900); at.run()
at.switch_page("pages/library.py").run()
at.query_params["character"] = str(c.id)
at.switch_page("pages/chat.py").run()
at.chat_input[0].set_value("Who are you?").run()
assert not at.exception, at.exception
print(psutil.Process().memory_info().rss / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=1800, check=True)  # fmt: skip
    return float(out.stdout.split()[-1])


def markdown(result: dict) -> str:
    out = [f"#### {result['label']}", "",
           "10-turn conversation, greedy, 24 new tokens per reply, through the app's `OpenAIBackend`.", ""]  # fmt: skip
    for name, run in result["servers"].items():
        header = "| turn | same prefix TTFT s | changed prefix TTFT s | prompt tokens | cached (server) |"
        out += [f"**{name}**", "", header, "|---:|---:|---:|---:|---:|"]
        for a, b in zip(run["same"], run["changed"], strict=True):
            out.append(f"| {a['turn']} | {a['ttft_s']:.3f} | {b['ttft_s']:.3f} | {a['prompt']} | {a['cached']} |")
        out += ["", f"Turn-10 time to first token, changed prefix / same prefix: **{run['turn10_ratio']:.2f}×**", ""]
    if result.get("memory"):
        out += ["| app process, after the pages and one reply | resident MB |", "|---|---:|"]
        out += [f"| {k} | {v:,.0f} |" for k, v in result["memory"].items()]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny random checkpoint (seconds)")
    parser.add_argument("--llamacpp-python", default=os.environ.get("REFSHEET_LLAMACPP_PYTHON", ""),
                        help="a Python with llama-cpp-python[server] installed")  # fmt: skip
    parser.add_argument("--parts", default="transformers,llamacpp,memory",
                        help="what to run; results of the other parts already in --out are kept")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "remote.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    if args.tiny:
        folder, label = build_tiny(work / "tiny"), "Tiny random Gemma 3 (64 px, 4 tokens/image)"
    else:
        folder = build_realistic(ROOT / "bench" / ".models" / "realistic-270m-siglip896")
        label = "Gemma 3 270M text weights + random full-size SigLIP (896 px, 256 tokens/image), CPU"
    sheet = square_sheet(896)
    prefix = character_prompt(PROFILE, [Picture(hashlib.sha256(sheet).hexdigest(), sheet)])
    sampler = SamplerSettings(temperature=0, max_new_tokens=24)
    parts = set(args.parts.split(","))
    earlier = (
        json.loads(args.out.read_text())
        if args.out.exists() and parts != {"transformers", "llamacpp", "memory"}
        else {}
    )
    result: dict = {**earlier, "label": label, "servers": dict(earlier.get("servers", {}))}

    def save() -> None:  # after each part, so a failure later loses nothing measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))

    if "transformers" in parts:
        port = free_port()
        command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder), "--host",
                   "127.0.0.1", "--port", str(port)]  # fmt: skip
        with running(command, f"http://127.0.0.1:{port}/health", work / "transformers-serve.log"):
            base = f"http://127.0.0.1:{port}/v1"
            result["servers"]["`transformers serve` (vision checkpoint, no server cache)"] = both_loops(
                base, str(folder), prefix, sampler
            )
        save()

    if "llamacpp" in parts and args.llamacpp_python:
        gguf = _gguf_path()
        port = free_port()
        command = [args.llamacpp_python, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                   "--port", str(port), "--n_ctx", "4096"]  # fmt: skip
        text_only = CharacterPrompt(prefix.instruction.replace("The first picture", "A picture"), (),
                                    kickoff_line(PROFILE))  # fmt: skip
        with running(command, f"http://127.0.0.1:{port}/v1/models", work / "llama-cpp.log"):
            result["servers"]["llama-cpp-python server (Gemma 3 270M GGUF, text only)"] = both_loops(
                f"http://127.0.0.1:{port}/v1", str(gguf), text_only, sampler
            )
        save()

    if "memory" in parts:
        art = work / "sheet.png"
        art.write_bytes(sheet)
        common = {"BENCH_SHEET": str(art), "REFSHEET_QUANTIZATION": "none", "REFSHEET_DEVICE": "cpu"}
        memory = {}
        local = {**common, "REFSHEET_DATA_DIR": str(work / "local"), "REFSHEET_BACKEND": "local",
                 "REFSHEET_MODEL": str(folder)}  # fmt: skip
        memory["local backend (the model in the app)"] = app_memory(local)
        port = free_port()
        command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder), "--host",
                   "127.0.0.1", "--port", str(port)]  # fmt: skip
        with running(command, f"http://127.0.0.1:{port}/health", work / "transformers-serve-2.log"):
            remote = {**common, "REFSHEET_DATA_DIR": str(work / "remote"), "REFSHEET_BACKEND": "openai",
                      "REFSHEET_API_BASE": f"http://127.0.0.1:{port}/v1",
                      "REFSHEET_API_MODEL": str(folder)}  # fmt: skip
            memory["remote backend (the model in a server)"] = app_memory(remote)
        result["memory"] = memory
        save()

    print(markdown(result))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
