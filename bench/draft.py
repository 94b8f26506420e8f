"""Read the sheet: how long a draft takes, and what drafting one field again saves.

    python -m bench.draft            # realistic shapes: real Gemma 3 270M text + full-size SigLIP (896 px)
    python -m bench.draft --tiny     # the tiny random checkpoint, for a quick run

One process, one sheet and two extra pictures (three pictures in all, as a sheet with two other
angles). Runs the whole-profile draft from cold (every picture through the vision tower), then three
one-field drafts, which start from the cached pictures. Reported per run: time to first token,
tokens prefilled of the prompt, new tokens, total time, and whether the answer parsed. Prints Markdown.
The realistic checkpoint's language model is real but its vision tower random, so its answers are
not a character's profile: the times are what matters here.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps

from bench.checkpoints import build_realistic, build_tiny
from core.base.settings import Settings
from core.base.sheets import Picture, prepare_image
from core.model.backends.gemma.backend import GemmaBackend
from core.services.draft import parse_draft, read_sheet

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"
NOTES = "Guardian of the Eldoria forest. Speaks softly; protective of travellers."


def pictures() -> list[Picture]:
    """The neutral sheet, the joy one, and the neutral one mirrored: three distinct pictures."""
    neutral = (IMAGES / "seraphina_neutral.png").read_bytes()
    mirrored = ImageOps.mirror(Image.open(IMAGES / "seraphina_neutral.png").convert("RGB"))
    path = Path(tempfile.mkdtemp()) / "mirrored.png"
    mirrored.save(path)
    raws = [neutral, (IMAGES / "seraphina_joy.png").read_bytes(), path.read_bytes()]
    return [p for p in (prepare_image(raw, f"{i}.png") for i, raw in enumerate(raws))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny random checkpoint (quick, tiny shapes)")
    args = parser.parse_args()
    models = ROOT / "bench" / ".models"
    if args.tiny:
        folder, label = build_tiny(Path(tempfile.mkdtemp()) / "tiny"), "tiny random Gemma 3"
    else:
        folder, label = build_realistic(models / "realistic-270m-siglip896"), "Gemma 3 270M + SigLIP 896 px"
    data = Path(tempfile.mkdtemp())
    backend = GemmaBackend(Settings(model_id=str(folder), quantization="none", device="cpu", data_dir=data))
    started = time.perf_counter()
    backend.prepare()
    loaded = time.perf_counter() - started
    images = pictures()
    rows = []
    for only in (None, "personality", "tags", "first_mes"):
        run = read_sheet(backend, images, NOTES, "English", only=only, name="Seraphina")
        began = time.perf_counter()
        for _ in run:
            pass
        took = time.perf_counter() - began
        stats = run._stream.stats
        draft = parse_draft(run.text, only)
        rows.append((only or "whole profile", stats, took, "yes" if draft.fields else "no (to the notes)"))
    print(f"\n#### {label}, {torch.get_num_threads()} CPU threads, {platform.machine()}; model load {loaded:.1f} s\n")
    print("| Draft | First token | Prompt tokens (prefilled) | New tokens | Total | Parsed |")
    print("|---|---|---|---|---|---|")
    for what, s, took, parsed in rows:
        print(f"| {what} | {s.ttft_s:.2f} s | {s.prompt_tokens} ({s.prefilled_tokens}) | {s.new_tokens} "
              f"| {took:.2f} s | {parsed} |")  # fmt: skip


if __name__ == "__main__":
    main()
