"""Prompts as the real Gemma 3 processor (tiny checkpoint) tokenises them."""

from __future__ import annotations

import torch
from PIL import Image

from core.base.languages import REPLY_LANGUAGES
from core.base.profile import Profile, profile_of
from core.base.sheets import Picture, decode, prepare_image
from core.model.prompts import Turn, build_messages, character_prompt
from tests.conftest import encode

SERAPHINA = Profile(
    name="Seraphina",
    notes="Guardian of the Eldoria forest; {{user}} is her guest.",
    language="日本語",
    personality="caring",
    post_history_instructions="Keep replies short.",
)


def _attachment(colour: str) -> Picture:
    prepared = prepare_image(encode(Image.new("RGB", (40, 40), colour), "PNG"), f"{colour}.png")
    return prepared


def test_instruction_follows_the_seed_rules() -> None:
    prefix = character_prompt(SERAPHINA, [_attachment("red"), _attachment("blue")])
    text = prefix.instruction
    assert "You are Seraphina" in text and "Japanese (日本語)" in text
    assert "Guardian of the Eldoria forest; you is her guest." in text  # {{user}} filled in
    assert "Never mention reference images" in text and "never confirm" in text
    assert "1 picture(s) after it" in text
    assert "Keep replies short." in text
    assert "Japanese (日本語)" in prefix.kickoff
    assert len(REPLY_LANGUAGES) >= 10


def test_creator_notes_never_reach_the_prompt() -> None:
    class Card:
        name, notes, language, description, personality, scenario = "A", "", "English", "d", "p", "s"
        mes_example = system_prompt = post_history_instructions = ""
        creator_notes = "SECRET CREATOR NOTE"

    prefix = character_prompt(profile_of(Card()), [_attachment("red")])
    assert "SECRET" not in prefix.instruction


def test_prompt_tokens_images_and_alternating_roles(chat_engine, sheet) -> None:
    processor = chat_engine.handle.processor
    tok = processor.tokenizer
    prefix = character_prompt(SERAPHINA, [sheet])
    photo = _attachment("green")
    history = (
        Turn("assistant", "Welcome to my glade."),
        Turn("user", "Look at this:", images=(photo,)),
        Turn("assistant", "A green stone!"),
        Turn("user", "Where am I?"),
    )
    messages, images = build_messages(prefix, history)
    encoded = chat_engine.encode(messages, images)
    ids = encoded.ids
    text = tok.decode(ids)

    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert "You are Seraphina" in text and "Japanese (日本語)" in text
    per_image = chat_engine.handle.image_tokens
    assert ids.count(tok.boi_token_id) == 2 and ids.count(tok.eoi_token_id) == 2
    for pos in encoded.boi_positions:  # each image: <start_of_image>, N soft tokens, <end_of_image>
        assert ids[pos + 1 : pos + 1 + per_image] == [tok.image_token_id] * per_image
        assert ids[pos + 1 + per_image] == tok.eoi_token_id
    assert int(encoded.token_type_ids.sum()) == 2 * per_image
    # The mid-chat image sits inside its own user turn, after the first model turn.
    second_user_turn = text.index("<start_of_turn>user", text.index("Welcome to my glade."))
    assert second_user_turn < text.index("<start_of_image>", second_user_turn) < text.index("Look at this:")
    assert text.endswith("Where am I?<end_of_turn>\n<start_of_turn>model\n")

    # Exactly what the processor itself produces from the same conversation with real images.
    with_pixels = [
        {**m, "content": [dict(c) for c in m["content"]]} for m in messages
    ]  # a copy whose image items carry the images
    queue = iter(images)
    for m in with_pixels:
        for c in m["content"]:
            if c["type"] == "image":
                c["image"] = decode(next(queue).data)
    reference = processor.apply_chat_template(
        with_pixels, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert torch.equal(reference["input_ids"], encoded.input_ids)
    assert torch.equal(reference["token_type_ids"], encoded.token_type_ids)
    ours = torch.cat([chat_engine.pixels.get(img) for img in images])
    assert torch.allclose(reference["pixel_values"].to(ours.dtype), ours)


def test_consecutive_turns_of_one_role_are_merged(sheet) -> None:
    prefix = character_prompt(SERAPHINA, [sheet])
    messages, _ = build_messages(prefix, (Turn("assistant", "Hi."), Turn("user", "One."), Turn("user", "Two.")))
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[-1]["content"] == [{"type": "text", "text": "One.\n\nTwo."}]
