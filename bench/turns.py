"""Turn-by-turn latency: the upstream-style loop against RefSheet Chat's cached pipeline.

    python -m bench.turns            # realistic shapes: real Gemma 3 270M text + full-size SigLIP (896 px)
    python -m bench.turns --tiny     # the tiny random checkpoint, for a quick run

In one process, with the same weights, a 10-turn conversation about one 896×896 sheet runs
(a) the upstream way: the whole chat template and the image through the processor and
    `model.generate` every turn, no cache kept;
(b) ours: `ChatEngine` with the KV store (prefix snapshot + conversation cache) and the pixel cache.
Both see exactly the same prompts (b's replies are fed to a). Reported per turn: time to first
token, tokens prefilled, total time, peak resident memory; then raw `model.generate` decode speed
against our streaming pipeline (streamer, queue, stop check, saving to SQLite), and the model
footprint for none/8bit/4bit. Prints Markdown; writes JSON to bench/results/turns.json.
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import io
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import torch
from PIL import Image

from bench.checkpoints import build_realistic, build_tiny
from core.base.profile import Profile
from core.base.sampling import SamplerSettings
from core.base.settings import Settings
from core.base.sheets import Picture, decode, prepare_image
from core.model.backend import ReplyRequest
from core.model.backends import model_thread
from core.model.backends.gemma.engine import ChatEngine, new_cache
from core.model.backends.gemma.kvcache import MB, KVStore
from core.model.backends.gemma.model import load_model
from core.model.backends.gemma.prefix_disk import PrefixDisk
from core.model.prompts import Turn, build_messages, character_prompt
from core.services import characters, conversations, turns
from core.services.users import LOCAL_USER
from storage import conversations as convs
from storage.db import make_engine, migrate, session_scope
from storage.tables import MessageStatus, Role

ROOT = Path(__file__).resolve().parents[1]
SHEET = ROOT.parent / "shared" / "images" / "seraphina_neutral.png"
QUESTIONS = [
    "Hello! Who are you?",
    "Where do you live?",
    "What is your favourite food?",
    "Tell me about your friends.",
    "What do you do on a rainy day?",
    "What are you afraid of?",
    "Do you like music?",
    "What was your best day?",
    "What do you dream about?",
    "Will we meet again tomorrow?",
]
PROFILE = Profile(name="Seraphina", notes="Guardian of the forest glade. Kind, a little shy.", language="English")
GREETING = "Oh! A visitor. Welcome to my glade, traveller."


class PeakRSS:
    """Samples this process's resident memory every 5 ms while active."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


class FirstTokenTimer:
    """The least a streamer can be: note when tokens arrive (for the upstream loop and raw speed)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt = True

    def put(self, value: Any) -> None:
        if self._prompt:
            self._prompt = False
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def square_sheet(side: int) -> bytes:
    """The shared character art centred on a white side×side canvas (the model resizes to 896 anyway)."""
    art = Image.open(SHEET).convert("RGBA") if SHEET.exists() else Image.new("RGBA", (608, 912), (200, 80, 120, 255))
    art.thumbnail((side, side))
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(art, ((side - art.width) // 2, (side - art.height) // 2))
    return prepare_image(_png(canvas), "sheet.png").data


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def progress(loop: str, row: dict) -> None:
    """One line per turn on stderr, so a long run shows it is alive (the tables go to stdout)."""
    print(f"{loop:>8} turn {row['turn']:>2}: first token {row['ttft_s']:.3f} s, {row['prefilled']} tokens prefilled, "
          f"{row['total_s']:.2f} s", file=sys.stderr, flush=True)  # fmt: skip


def run_ours(engine: ChatEngine, prefix, sampler: SamplerSettings) -> tuple[list[dict], list[Turn]]:
    history = [Turn("assistant", GREETING)]
    rows = []
    for i, question in enumerate(QUESTIONS, 1):
        history.append(Turn("user", question))
        started = time.perf_counter()
        with PeakRSS() as rss:
            stream = engine.stream(ReplyRequest(prefix, tuple(history), sampler, "bench:conversation"))
            text = "".join(stream)
        s = stream.stats
        rows.append({"turn": i, "ttft_s": s.ttft_s, "prefilled": s.prefilled_tokens, "prompt": s.prompt_tokens,
                     "total_s": time.perf_counter() - started, "new_tokens": s.new_tokens, "cache": s.cache,
                     "peak_rss_mb": rss.peak / MB})  # fmt: skip
        progress("ours", rows[-1])
        history.append(Turn("assistant", text))
    return rows, history


def after_restart(handle, prefix, sampler: SamplerSettings) -> dict:
    """The first reply of a new conversation in a process that has never seen the character: with no
    saved prefix (the vision tower runs) and with the prefix a previous process saved on disk."""
    request = ReplyRequest(prefix, (Turn("assistant", GREETING), Turn("user", QUESTIONS[0])), sampler, None)
    with tempfile.TemporaryDirectory() as folder:

        def process() -> ChatEngine:  # what a server process starts with: empty memory, this data folder
            disk = PrefixDisk(Path(folder), 4096 * MB, handle.identity, lambda: new_cache(handle))
            return ChatEngine(handle, KVStore(4096 * MB, disk, str(handle.model.device)))

        before = process()
        cold = before.stream(replace(request, conversation_key="bench:first"))
        first_text = "".join(cold)
        before.kv.flush()  # the snapshot is on disk
        restarted = process()
        warm = restarted.stream(replace(request, conversation_key="bench:after-restart"))
        warm_text = "".join(warm)
        saved_mb = sum(p.stat().st_size for p in Path(folder).iterdir()) / MB
    assert warm.stats.cache == "saved" and restarted.pixels.misses == 0  # the vision tower did not run
    row = {"cold_ttft_s": cold.stats.ttft_s, "restart_ttft_s": warm.stats.ttft_s, "cold_prefilled":
           cold.stats.prefilled_tokens, "restart_prefilled": warm.stats.prefilled_tokens, "saved_mb": saved_mb,
           "same_reply": first_text == warm_text}  # fmt: skip
    print(f"restart: first reply {row['cold_ttft_s']:.3f} s cold, {row['restart_ttft_s']:.3f} s from the saved "
          f"prefix", file=sys.stderr, flush=True)  # fmt: skip
    return row


def run_upstream(handle, prefix, history: list[Turn], sampler: SamplerSettings) -> tuple[list[dict], list[str]]:
    """The seed's loop: messages with the PIL image, processor, generate; nothing kept between turns."""
    processor, model = handle.processor, handle.model
    rows, replies = [], []
    user_turns = [k for k, t in enumerate(history) if t.role == "user"]
    for i, k in enumerate(user_turns, 1):
        messages, images = build_messages(prefix, history[: k + 1])
        pil = iter([decode(img.data) for img in images])
        for m in messages:  # the upstream demo hands PIL images to the chat template
            m["content"] = [{**c, "image": next(pil)} if c["type"] == "image" else c for c in m["content"]]
        timer = FirstTokenTimer()
        started = time.perf_counter()
        with PeakRSS() as rss:
            inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True, return_tensors="pt").to(model.device)  # fmt: skip
            with torch.no_grad():
                out = model.generate(**inputs, streamer=timer, **sampler.generate_kwargs())
        n = inputs["input_ids"].shape[1]
        rows.append({"turn": i, "ttft_s": timer.times[0] - started, "prefilled": n, "prompt": n,
                     "total_s": time.perf_counter() - started, "new_tokens": out.shape[1] - n,
                     "peak_rss_mb": rss.peak / MB})  # fmt: skip
        progress("upstream", rows[-1])
        replies.append(processor.tokenizer.decode(out[0, n:], skip_special_tokens=True))
    return rows, replies


def decode_speed(handle, prefix, history: list[Turn], tokens: int, repeats: int) -> dict[str, float]:
    """Decode tokens/s after the first token: raw generate (timing streamer only) vs our pipeline."""
    sampler = SamplerSettings(temperature=0, max_new_tokens=tokens, min_new_tokens=tokens)
    engine = ChatEngine(handle, KVStore(4096 * MB))
    request = ReplyRequest(prefix, tuple(history), sampler, None)
    messages, images = engine.fit(request)[:2]
    encoded = engine.encode(messages, images)
    prefilled = engine.new_cache()
    model_thread.run(torch.no_grad()(engine._prefill), encoded, prefilled, 0, len(encoded) - 1)
    raw, ours = [], []
    db = tempfile.TemporaryDirectory()
    store = make_engine(f"sqlite:///{db.name}/bench.db")
    migrate(store)
    character = characters.create(store, LOCAL_USER, {"name": "Bench"}, [prepare_image(images[0].data, "sheet.png")])
    conversation_id = conversations.start(store, LOCAL_USER, character.id).id
    ids = encoded.input_ids.to(handle.model.device)

    @torch.no_grad()
    def raw_generate(timer: FirstTokenTimer) -> None:
        handle.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            cache=copy.deepcopy(prefilled),
            streamer=timer,
            pad_token_id=handle.tokenizer.pad_token_id,
            **sampler.generate_kwargs(),
        )

    for _ in range(repeats):
        timer = FirstTokenTimer()
        model_thread.run(raw_generate, timer)
        raw.append((len(timer.times) - 1) / (timer.times[-1] - timer.times[0]))
        # Ours from the same warm state: a conversation-cache hit, streamed and saved to SQLite.
        engine.kv.remember("bench:decode", encoded.ids[:-1], model_thread.run(copy.deepcopy, prefilled))
        with session_scope(store) as s:  # the reply row, as `turns.reply` makes it
            row = convs.append_message(s, conversation_id, Role.ASSISTANT, "", status=MessageStatus.PARTIAL)
        stream = engine.stream(replace(request, conversation_key="bench:decode"))
        for _chunk in turns.ReplyRun(store, row.id, row.turn, stream, "en"):
            pass
        assert stream.stats.cache == "conversation"
        ours.append(stream.stats.tokens_per_s)
    store.dispose()
    db.cleanup()
    raw_tps, ours_tps = statistics.median(raw), statistics.median(ours)
    return {"raw_tps": raw_tps, "pipeline_tps": ours_tps, "ratio": ours_tps / raw_tps, "tokens": tokens,
            "repeats": repeats}  # fmt: skip


def footprints(folder: Path, device: str, dtype: str, prefix, history: list[Turn], tokens: int) -> list[dict]:
    """Footprint, load time and streamed decode speed for bf16, 8-bit and 4-bit weights."""
    rows = []
    sampler = SamplerSettings(temperature=0, max_new_tokens=tokens, min_new_tokens=tokens)
    for quantization in ("none", "8bit", "4bit"):
        gc.collect()
        started = time.perf_counter()
        handle = model_thread.run(
            load_model, Settings(model_id=str(folder), quantization=quantization, device=device, dtype=dtype)
        )
        load_s = time.perf_counter() - started
        engine = ChatEngine(handle, KVStore(4096 * MB))
        request = ReplyRequest(prefix, tuple(history), sampler, "bench:quantization")
        "".join(engine.stream(request))  # cold: encodes the sheet and the prompt once
        stream = engine.stream(replace(request, history=(*history, Turn("assistant", "Yes."), Turn("user", "Go on."))))
        "".join(stream)  # warm: a conversation-cache hit, as every later turn is
        rows.append(
            {
                "quantization": handle.quantization,
                "footprint_mb": handle.footprint_bytes / MB,
                "load_s": load_s,
                "ttft_s": stream.stats.ttft_s,
                "tokens_per_s": stream.stats.tokens_per_s,
            }
        )
        del handle, engine
        gc.collect()
    return rows


def _mb(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"  # the tiny model weighs under a megabyte


def restart_table(result: dict) -> str:
    r, ours = result["restart"], result["ours"]
    turn10 = ours[-1]["ttft_s"]
    return "\n".join([
        "| first token of… | s | tokens prefilled |", "|---|---:|---:|",
        f"| turn 1 of a new conversation, nothing kept (the vision tower runs) | {r['cold_ttft_s']:.3f} "
        f"| {r['cold_prefilled']} |",
        f"| turn 1 of a new conversation after a restart, prefix saved on disk | {r['restart_ttft_s']:.3f} "
        f"| {r['restart_prefilled']} |",
        f"| turn 10 (conversation cache) | {turn10:.3f} | {ours[-1]['prefilled']} |",
        "",
        f"After a restart the first reply starts {r['cold_ttft_s'] / r['restart_ttft_s']:.0f}× sooner than cold, "
        f"{r['restart_ttft_s'] / turn10:.1f}× the turn-10 time; the saved prefix is {r['saved_mb']:.0f} MB on disk; "
        f"same reply as the cold start: {'yes' if r['same_reply'] else 'no'}.",
    ])  # fmt: skip


def markdown(result: dict) -> str:
    out = [f"### {result['model']} on {result['hardware']}", "",
           f"10-turn conversation, one {result['sheet_px']}×{result['sheet_px']} sheet, greedy, "
           f"{result['new_tokens']} new tokens per reply, {result['dtype']}.", "",
           "| turn | upstream TTFT s | ours TTFT s | upstream prefilled | ours prefilled | upstream total s "
           "| ours total s | upstream peak RSS MB | ours peak RSS MB |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for up, us in zip(result["upstream"], result["ours"], strict=True):
        out.append(
            f"| {up['turn']} | {up['ttft_s']:.3f} | {us['ttft_s']:.3f} | {up['prefilled']} | {us['prefilled']} "
            f"| {up['total_s']:.2f} | {us['total_s']:.2f} | {up['peak_rss_mb']:.0f} | {us['peak_rss_mb']:.0f} |"
        )
    d = result["decode"]
    out += ["", f"**Turn-10 time to first token: {result['turn10_ratio']:.1f}× lower than the upstream way** "
            f"({result['upstream'][-1]['ttft_s']:.3f} s → {result['ours'][-1]['ttft_s']:.3f} s). "
            f"Same replies in both loops: {result['same_replies']}/{len(QUESTIONS)}.", "",
            "| decode speed (after the first token) | tokens/s |", "|---|---:|",
            f"| raw `model.generate` | {d['raw_tps']:.1f} |",
            f"| our streaming pipeline (streamer, queue, stop check, SQLite saves) | {d['pipeline_tps']:.1f} |",
            f"| pipeline / raw | {d['ratio'] * 100:.1f} % |", ""]  # fmt: skip
    out += [restart_table(result), ""]
    if result.get("footprints"):
        out += ["| weights | footprint MB | load s | warm TTFT s | decode tokens/s |", "|---|---:|---:|---:|---:|"]
        out += [
            f"| {f['quantization']} | {_mb(f['footprint_mb'])} | {f['load_s']:.1f} | {f['ttft_s']:.3f} "
            f"| {f['tokens_per_s']:.1f} |"
            for f in result["footprints"]
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="use the tiny random checkpoint (seconds)")
    parser.add_argument("--new-tokens", type=int, default=24, help="tokens per reply in the 10-turn run")
    parser.add_argument("--decode-tokens", type=int, default=64, help="tokens for the decode-speed comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--skip-footprints", action="store_true")
    parser.add_argument("--restart-only", action="store_true", help="our 10 turns and the restart rows only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "turns.json")
    args = parser.parse_args()

    models = ROOT / "bench" / ".models"
    if args.tiny:
        folder, label = build_tiny(Path(tempfile.mkdtemp()) / "tiny"), "tiny random Gemma 3 (64 px, 4 tokens/image)"
    else:
        folder = build_realistic(models / "realistic-270m-siglip896")
        label = "Gemma 3 270M text weights + random full-size SigLIP (896 px, 256 tokens/image)"  # fmt: skip
    # All torch work runs on the model thread, as in the app (see core/model/backends/model_thread.py).
    handle = model_thread.run(
        load_model, Settings(model_id=str(folder), quantization="none", device=args.device, dtype=args.dtype)
    )
    sheet = square_sheet(896)
    prefix = character_prompt(PROFILE, [Picture(hashlib.sha256(sheet).hexdigest(), sheet)])
    sampler = SamplerSettings(temperature=0, max_new_tokens=args.new_tokens)

    ours, history = run_ours(ChatEngine(handle, KVStore(4096 * MB)), prefix, sampler)
    restart = after_restart(handle, prefix, sampler)
    if args.restart_only:
        print(restart_table({"ours": ours, "restart": restart}))
        return
    upstream, replies = model_thread.run(run_upstream, handle, prefix, history, sampler)
    ours_replies = [t.text for t in history if t.role == "assistant"][1:]
    result = {
        "restart": restart,
        "model": label, "sheet_px": 896, "new_tokens": args.new_tokens, "dtype": args.dtype,
        "hardware": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} CPU threads, "
                    f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
                    + (f", {torch.cuda.get_device_name()}" if handle.device == "cuda" else ""),
        "device": handle.device, "ours": ours, "upstream": upstream,
        "turn10_ratio": upstream[-1]["ttft_s"] / ours[-1]["ttft_s"],
        "same_replies": sum(a == b for a, b in zip(ours_replies, replies, strict=True)),
        "decode": decode_speed(handle, prefix, history[:-1], args.decode_tokens, args.repeats),
    }  # fmt: skip
    del handle
    gc.collect()
    if not args.skip_footprints:
        result["footprints"] = footprints(folder, args.device, args.dtype, prefix, history[:3], args.decode_tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
