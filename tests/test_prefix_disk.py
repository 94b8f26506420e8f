"""The first reply after a restart does not wait for the vision tower: character prefixes saved on disk
(real files, the tiny real Gemma 3) are read back by a new process, give the same reply, are never
used by another model, are replaced when damaged and stay within their byte budget. And a new or
changed character is read by a loaded model in the background, giving way to replies."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from core.base.profile import Profile
from core.base.sampling import SamplerSettings
from core.model.backend import ReplyRequest
from core.model.backends.gemma.engine import ChatEngine, new_cache
from core.model.backends.gemma.kvcache import MB, KVStore
from core.model.backends.gemma.prefix_disk import SUFFIX, PrefixDisk
from core.model.prompts import Turn, character_prompt, prefix_message
from tests.test_kvcache import vision_calls

GREEDY = SamplerSettings(temperature=0, max_new_tokens=16)
HISTORY = (Turn("assistant", "Hello, traveller."), Turn("user", "Who are you?"))


@pytest.fixture
def prefix(sheet):
    return character_prompt(Profile(name="Seraphina", notes="Forest guardian."), [sheet])


def process(handle, folder: Path, limit_mb: float = 512, **identity: str) -> ChatEngine:
    """What a server process starts with: empty memory, the data folder of the one before."""
    disk = PrefixDisk(folder, int(limit_mb * MB), {**handle.identity, **identity}, lambda: new_cache(handle))
    return ChatEngine(handle, KVStore(256 * MB, disk, "cpu"))


def reply(engine: ChatEngine, prefix, key: str = "conversation:1") -> tuple[str, object]:
    stream = engine.stream(ReplyRequest(prefix, HISTORY, GREEDY, key))
    text = "".join(stream)
    engine.kv.flush()
    return text, stream.stats


def saved(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{SUFFIX}"))


def test_after_a_restart_the_first_reply_starts_from_the_saved_prefix(tiny_handle_f32, prefix, tmp_path) -> None:
    first, stats = reply(process(tiny_handle_f32, tmp_path), prefix)
    assert stats.cache == "cold" and len(saved(tmp_path)) == 1
    restarted = process(tiny_handle_f32, tmp_path)
    calls = vision_calls(restarted)
    again, stats = reply(restarted, prefix, "conversation:2")  # a new conversation, after the restart
    assert stats.cache == "saved" and calls[0] == 0 and restarted.pixels.misses == 0  # no vision tower
    assert stats.prefilled_tokens < stats.prompt_tokens / 2
    assert again == first  # the same reply as computing it all
    assert not list(tmp_path.glob(".*.tmp"))  # written whole, under its own name only


def test_a_saved_prefix_is_used_only_by_the_model_that_made_it(tiny_handle_f32, prefix, tmp_path) -> None:
    reply(process(tiny_handle_f32, tmp_path), prefix)
    other = process(tiny_handle_f32, tmp_path, quantization="4bit")  # another model identity
    _, stats = reply(other, prefix)
    assert stats.cache == "cold" and len(saved(tmp_path)) == 2  # its own file, beside the first
    changed = replace(prefix, instruction=prefix.instruction + " Speak in rhyme.")
    _, stats = reply(process(tiny_handle_f32, tmp_path), changed)
    assert stats.cache == "cold"  # an edited character is a new prefix


def test_a_damaged_file_is_ignored_and_replaced(tiny_handle_f32, prefix, tmp_path) -> None:
    text, _ = reply(process(tiny_handle_f32, tmp_path), prefix)
    (path,) = saved(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a crash or a bad disk
    again, stats = reply(process(tiny_handle_f32, tmp_path), prefix)
    assert stats.cache == "cold" and again == text  # computed again, not crashed
    _, stats = reply(process(tiny_handle_f32, tmp_path), prefix)
    assert stats.cache == "saved"  # the damaged file was replaced by a good one
    path.write_bytes(b"not a safetensors file at all")
    assert reply(process(tiny_handle_f32, tmp_path), prefix)[1].cache == "cold"


def test_saved_prefixes_stay_within_their_budget(tiny_handle_f32, prefix, sheet, tmp_path) -> None:
    reply(process(tiny_handle_f32, tmp_path), prefix)
    size = saved(tmp_path)[0].stat().st_size
    budget_mb = size * 1.5 / MB  # room for one prefix, not two
    other = character_prompt(Profile(name="Aster"), [sheet])
    reply(process(tiny_handle_f32, tmp_path, budget_mb), other, "conversation:2")
    assert len(saved(tmp_path)) == 1  # the least recently used went
    assert reply(process(tiny_handle_f32, tmp_path, budget_mb), other)[1].cache == "saved"
    assert reply(process(tiny_handle_f32, tmp_path, budget_mb), prefix)[1].cache == "cold"


def test_a_prefix_that_cannot_be_saved_costs_the_reply_nothing(tiny_handle_f32, prefix, tmp_path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")  # like a read-only or full disk
    text, stats = reply(process(tiny_handle_f32, blocked), prefix)
    assert text and stats.cache == "cold"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]  # no half-written file anywhere


# -- warming up --------------------------------------------------------------------------------------


def test_a_warm_up_never_loads_the_model(backend, prefix) -> None:
    backend.warm("character:1", lambda: prefix)
    assert backend.settle(timeout=5) and not backend.prepared and backend.status().state == "idle"


def test_a_new_character_is_read_in_the_background_so_its_first_reply_starts_warm(backend, prefix) -> None:
    backend.prepare()
    backend.warm("character:1", lambda: prefix)
    assert backend.settle(timeout=60)
    engine = backend.engine()
    calls = vision_calls(engine)
    phases = []
    stream = backend.stream(ReplyRequest(prefix, HISTORY, GREEDY, "conversation:1"), on_progress=phases.append)
    assert "".join(stream)
    assert stream.stats.cache == "prefix" and calls[0] == 0  # the sheet was read before anyone asked
    assert not [p for p in phases if p.key == "progress.sheet"]  # so the user never waited for it
    assert list((backend.settings.data_dir / "prefix-cache").glob(f"*{SUFFIX}"))  # and it outlives the process


def test_a_warm_up_gives_way_to_replies(backend, prefix, sheet) -> None:
    engine = backend.engine()
    with engine.gate.turn():  # a reply is being written
        assert engine.warm(prefix) is False  # the warm-up does not queue behind (or before) it
    asked = []

    def someone_arrives_after_the_picture() -> bool:  # asked before starting, then before each span
        asked.append(1)
        return len(asked) > 2

    assert engine.warm(prefix, yield_to=someone_arrives_after_the_picture) is False  # it stopped mid-way
    assert len(asked) == 3  # after the picture, before the rest: it kept nothing
    ids = engine.token_ids([prefix_message(prefix)])
    assert not engine.kv.has_prefix(prefix.key, ids[:-1])
    other = character_prompt(Profile(name="Aster"), [sheet])
    waiting = threading.Event()

    def reply_arrives() -> None:  # a reply queued while the warm-up holds the model
        with engine.gate.turn(on_wait=lambda ahead: waiting.set()):
            pass

    with engine.gate.turn():
        arrival = threading.Thread(target=reply_arrives)
        arrival.start()
        assert waiting.wait(5) and engine.gate.waiting == 1  # what a warm-up's default check sees
    arrival.join()
    assert engine.warm(other) is True  # and with the model free again, it does its work
