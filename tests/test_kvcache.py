"""KV reuse never changes a reply: cached vs uncached greedy replies, token for token.

Each case runs the same request through an engine with the KV store and one without (which
prefills the whole prompt every time, like the upstream demo) and also checks where the cache
came from: the conversation's own cache, the character prefix snapshot, or nothing.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from core.base.lore import Lorebook
from core.base.profile import Profile
from core.base.sampling import SamplerSettings
from core.base.sheets import prepare_image
from core.model.backend import ReplyRequest
from core.model.backends.gemma.engine import ChatEngine
from core.model.backends.gemma.kvcache import MB, KVStore
from core.model.prompts import Turn, character_prompt
from tests.conftest import encode

GREEDY = SamplerSettings(temperature=0, max_new_tokens=20)
QUESTIONS = ["Who are you?", "Where do you live?", "What do you eat?", "Do you have friends?", "Goodbye!"]


@pytest.fixture
def prefix(sheet):
    return character_prompt(Profile(name="Seraphina", notes="Forest guardian."), [sheet])


@pytest.fixture
def cached(tiny_handle_f32):
    return ChatEngine(tiny_handle_f32, KVStore(256 * MB))


@pytest.fixture
def plain(tiny_handle_f32):
    return ChatEngine(tiny_handle_f32)


def vision_calls(engine: ChatEngine) -> list[int]:
    """Counts how often the vision tower runs (it should run once per image, ever)."""
    calls = [0]
    engine.handle.model.model.vision_tower.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def reply(engine: ChatEngine, prefix, history, sampler=GREEDY, key="conversation:1"):
    stream = engine.stream(ReplyRequest(prefix, tuple(history), sampler, key))
    return "".join(stream), stream.stats


def test_ten_turns_hit_the_conversation_cache_and_match(cached, plain, prefix) -> None:
    history: list[Turn] = []
    text, stats = reply(cached, prefix, history)  # the greeting
    assert stats.cache == "cold" and stats.prefilled_tokens == stats.prompt_tokens
    assert text == reply(plain, prefix, history)[0]
    history.append(Turn("assistant", text))
    for question in QUESTIONS:
        history.append(Turn("user", question))
        text, stats = reply(cached, prefix, history)
        expected, full = reply(plain, prefix, history)
        assert text == expected
        assert stats.cache == "conversation"
        # Only the previous reply's last token and the new turn are prefilled.
        assert stats.prefilled_tokens < 40 < full.prefilled_tokens == full.prompt_tokens
        history.append(Turn("assistant", text))
    report = cached.kv.report()
    assert report["hits"] == len(QUESTIONS) and report["misses"] == 1 and report["bytes"] > 0


def test_lore_added_mid_conversation_keeps_the_cache_valid(cached, plain, sheet) -> None:
    book = Lorebook.from_card({"entries": [{"keys": ["river"], "content": "The river sings at dusk."}]})
    prefix = character_prompt(Profile(name="Seraphina"), [sheet], book)
    history = [Turn("assistant", "Hello.")]
    for question in ["Hi!", "Tell me about the river.", "And then?", "Goodbye."]:
        history.append(Turn("user", question))
        text, stats = reply(cached, prefix, history)
        assert text == reply(plain, prefix, history)[0]
        if len(history) > 2:  # every turn after the first continues the conversation's own cache
            assert stats.cache == "conversation"
        history.append(Turn("assistant", text))


def test_regenerate_restarts_from_the_prefix_snapshot(cached, plain, prefix) -> None:
    greeting, _ = reply(cached, prefix, [])
    history = [Turn("assistant", greeting), Turn("user", "Who are you?")]
    reply(cached, prefix, history)
    # Regenerate: the same history again, while the cache now also holds the first answer.
    again, stats = reply(cached, prefix, history, SamplerSettings(temperature=0, max_new_tokens=12))
    assert stats.cache == "prefix"
    assert again == reply(plain, prefix, history, SamplerSettings(temperature=0, max_new_tokens=12))[0]


def test_editing_an_earlier_message_and_changing_settings(cached, plain, prefix) -> None:
    greeting, _ = reply(cached, prefix, [])
    history = [Turn("assistant", greeting), Turn("user", "Who are you?")]
    answer, _ = reply(cached, prefix, history)
    edited = [history[0], Turn("user", "Who are YOU, really?")]
    text, stats = reply(cached, prefix, edited)
    assert stats.cache == "prefix" and text == reply(plain, prefix, edited)[0]

    # New sampler settings do not change what the cache holds: still a conversation hit.
    follow = [*edited, Turn("assistant", text), Turn("user", "And then?")]
    penalised = SamplerSettings(temperature=0, max_new_tokens=15, repetition_penalty=1.3)
    text, stats = reply(cached, prefix, follow, penalised)
    assert stats.cache == "conversation" and text == reply(plain, prefix, follow, penalised)[0]
    assert answer  # the first answer existed; editing replaced the story from there


def test_image_attached_mid_chat(cached, plain, prefix) -> None:
    greeting, _ = reply(cached, prefix, [])
    red = prepare_image(encode(Image.new("RGB", (50, 50), "red"), "PNG"), "red.png")
    history = [Turn("assistant", greeting), Turn("user", "Look!", images=(red,))]
    text, stats = reply(cached, prefix, history)
    assert stats.cache == "conversation"  # the greeting's cache, extended with the new image
    assert text == reply(plain, prefix, history)[0]
    history += [Turn("assistant", text), Turn("user", "What colour was it?")]
    text, stats = reply(cached, prefix, history)
    assert stats.cache == "conversation" and text == reply(plain, prefix, history)[0]


def test_context_trimming_falls_back_to_the_prefix(tiny_handle_f32, prefix) -> None:
    history = [Turn("assistant", "Welcome.")]
    for i in range(8):
        history += [Turn("user", f"Question number {i}?"), Turn("assistant", f"Answer number {i}.")]
    history.append(Turn("user", "Last one?"))
    probe = ChatEngine(replace(tiny_handle_f32, context_limit=100_000))
    full = probe.count_tokens(probe.fit(ReplyRequest(prefix, tuple(history), GREEDY))[0])
    small = replace(tiny_handle_f32, context_limit=full - 50 + GREEDY.max_new_tokens)
    cached, plain = ChatEngine(small, KVStore(256 * MB)), ChatEngine(small)

    reply(cached, prefix, history[:-2])  # an earlier turn fills the conversation cache
    text, stats = reply(cached, prefix, history)
    expected, plain_stats = reply(plain, prefix, history)
    assert stats.dropped_turns == plain_stats.dropped_turns > 0
    assert stats.cache == "prefix" and text == expected


def test_eviction_recomputes_and_still_matches(tiny_handle_f32, plain, prefix) -> None:
    probe = ChatEngine(tiny_handle_f32, KVStore(256 * MB))
    reply(probe, prefix, [])
    one_entry = max(e.nbytes for e in probe.kv._entries.values())
    cached = ChatEngine(tiny_handle_f32, KVStore(int(one_entry * 1.5)))  # room for one entry only

    a, _ = reply(cached, prefix, [], key="conversation:a")
    b, _ = reply(cached, prefix, [], key="conversation:b")
    assert cached.kv.report()["evictions"] >= 1
    history = [Turn("assistant", a), Turn("user", "Still there?")]
    text, stats = reply(cached, prefix, history, key="conversation:a")
    assert stats.cache != "conversation"  # it was evicted, so it was recomputed
    assert text == reply(plain, prefix, history)[0] and a == b


def test_each_image_is_encoded_once(cached, prefix) -> None:
    calls = vision_calls(cached)
    greeting, _ = reply(cached, prefix, [], key="conversation:1")
    reply(cached, prefix, [], key="conversation:2")  # a second conversation with the same character
    history = [Turn("assistant", greeting), Turn("user", "Hello")]
    for _ in range(3):
        text, _ = reply(cached, prefix, history, key="conversation:1")
        history += [Turn("assistant", text), Turn("user", "More")]
    assert calls[0] == 1  # the sheet went through the vision tower once
    assert cached.pixels.misses == 1  # and was decoded and resized once


def test_model_status_reports_cache_use(tiny_checkpoint) -> None:
    from core.base.settings import Settings
    from core.model.backends.gemma.backend import GemmaBackend

    backend = GemmaBackend(Settings(model_id=str(tiny_checkpoint), quantization="none"),
                           lambda h: ChatEngine(h, KVStore(64 * MB)))  # fmt: skip
    engine = backend.engine()
    sheet = prepare_image(encode(Image.new("RGB", (30, 30), "blue"), "PNG"))
    reply(engine, character_prompt(Profile(name="B"), [sheet]), [])
    (line,) = backend.status().details  # what Home shows under the model status
    extra = line.params
    assert line.render("en").startswith("KV cache: 2 kept")
    assert extra["misses"] == 1 and extra["entries"] == 2 and extra["bytes"] > 0 and extra["limit_mb"] == "64"


def test_continuing_a_cut_off_reply_matches_a_cold_start(cached, plain, prefix) -> None:
    greeting, _ = reply(cached, prefix, [])
    history = [Turn("assistant", greeting), Turn("user", "Who are you?")]
    answer, _ = reply(cached, prefix, history)
    cut = answer[: len(answer) // 2]
    request = ReplyRequest(prefix, tuple(history), GREEDY, "conversation:1", continuation=cut)
    warm, cold = cached.stream(request), plain.stream(request)
    assert "".join(warm) == "".join(cold)
    fresh = plain.stream(replace(request, continuation=""))
    "".join(fresh)
    assert warm.stats.prompt_tokens == cold.stats.prompt_tokens > fresh.stats.prompt_tokens  # the cut text is read
