"""Read the sheet: the JSON repair on realistic model answers, the draft with the real tiny Gemma 3 (local
and through a real OpenAI-compatible server), and the form filled from a draft in the real app."""

from __future__ import annotations

import threading

import pytest

from core.base.settings import Settings
from core.model.backend import collect
from core.services.draft import FIELDS, STYLE_LABEL, draft_request, parse_draft, read_sheet
from tests.conftest import new_app

FENCED = """Sure! Here is a profile based on the reference sheet:

```json
{
  "name": "Seraphina",
  "appearance": "A tall elf with long pink hair and amber eyes, in a green cloak.",
  "personality": "Gentle and protective.",
  "speaking_style": "Soft, warm, a little formal.",
  "scenario": "You wake up in her glade.",
  "greeting": "*She kneels beside you.* You're safe now.",
  "alternate_greetings": ["*She smiles.* Back again?", "Shh, the forest is listening.",],
  "tags": ["Fantasy", "elf", "healer",],
}
```
I hope this helps!"""

CUT_OFF = '{"name": "Kaito", "appearance": "Short black hair, a red scarf", "personality": "Restless, kind, alw'


def test_a_fenced_answer_with_chatter_and_trailing_commas_fills_every_field() -> None:
    draft = parse_draft(FENCED)
    assert draft.fields["name"] == "Seraphina"
    assert draft.fields["description"].startswith("A tall elf with long pink hair")
    assert draft.fields["personality"] == f"Gentle and protective.\n\n{STYLE_LABEL}: Soft, warm, a little formal."
    assert draft.fields["first_mes"] == "*She kneels beside you.* You're safe now."
    assert draft.fields["alternate_greetings"] == ["*She smiles.* Back again?", "Shh, the forest is listening."]
    assert draft.fields["tags"] == ["fantasy", "elf", "healer"]
    assert draft.found == FIELDS and draft.leftover == ""


def test_an_answer_cut_off_by_the_length_limit_keeps_what_came() -> None:
    draft = parse_draft(CUT_OFF)
    assert draft.fields["name"] == "Kaito" and draft.fields["description"] == "Short black hair, a red scarf"
    assert draft.fields["personality"].startswith("Restless, kind")
    assert "first_mes" not in draft.fields and draft.leftover == ""


@pytest.mark.parametrize(
    "answer",
    ["I'm sorry, I can't see the picture clearly.", "<unused42> ▁▁ 甲乙 }}}{{ ]]", "", "[1, 2, 3]", '{"mood": 7}'],
)
def test_an_answer_that_is_not_a_profile_goes_to_the_notes_and_never_raises(answer: str) -> None:
    draft = parse_draft(answer)
    assert draft.fields == {}
    assert draft.leftover == answer.strip()


def test_odd_shapes_are_coerced_and_one_field_keeps_only_that_field() -> None:
    odd = '[{"Name": 42, "tags": "Sci-fi, Robot ,, robot", "greeting": ["Hello", "there"], "scenario": {"x": 1}}]'
    draft = parse_draft(odd)
    assert draft.fields == {"name": "42", "tags": ["sci-fi", "robot"], "first_mes": "Hello there"}
    assert parse_draft(FENCED, only="tags").fields == {"tags": ["fantasy", "elf", "healer"]}


def test_drafting_one_field_again_reads_the_same_pictures_first(sheet) -> None:
    """The pictures and notes are a fixed prefix, the task comes after: a second draft reuses the first's
    cache instead of encoding every sheet again."""
    everything = draft_request([sheet], "Guardian of the forest", "日本語")
    one = draft_request([sheet], "Guardian of the forest", "日本語", only="personality", name="Seraphina")
    assert everything.prefix.key == one.prefix.key
    assert "Japanese" in everything.prefix.instruction and "Guardian of the forest" in everything.prefix.instruction
    assert '"personality"' in one.history[-1].text and '"speaking_style"' in one.history[-1].text
    assert '"greeting"' not in one.history[-1].text and "Seraphina" in one.history[-1].text


def test_the_tiny_model_drafts_then_one_field_reuses_its_reading(backend, sheet) -> None:
    """End to end with the real (random, tiny) Gemma 3: its answer is gibberish, which exercises the
    fallback; the second run starts from the cached pictures."""
    backend.prepare()
    run = read_sheet(backend, [sheet], "Guardian of the forest", "English")
    text = "".join(run)
    draft = run.draft()
    assert text and (draft.fields or draft.leftover == text.strip())  # a draft or the notes, never an error
    again = read_sheet(backend, [sheet], "Guardian of the forest", "English", only="name")
    collect(again._stream)
    stats = again._stream.stats
    assert stats.cache in ("prefix", "conversation") and stats.prefilled_tokens < stats.prompt_tokens


def test_stop_ends_a_draft_with_what_came(backend, sheet) -> None:
    backend.prepare()
    stop = threading.Event()
    run = read_sheet(backend, [sheet], "", "English", stop=stop)
    for i, _ in enumerate(run):
        if i == 3:
            stop.set()
    assert run._stream.stats.stopped and 0 < run._stream.stats.new_tokens < 20
    assert run.text  # what came before Stop is kept for the form


@pytest.mark.slow
def test_a_draft_through_a_real_openai_compatible_server(openai_server, tiny_checkpoint, sheet) -> None:
    from core.model.backends.openai.backend import OpenAIBackend

    backend = OpenAIBackend(Settings(backend="openai", api_base=openai_server, api_model=str(tiny_checkpoint)))
    backend.prepare()
    run = read_sheet(backend, [sheet], "Guardian of the forest", "English", only="tags")
    text = "".join(run)
    assert run._stream.stats.prompt_tokens > 0 and text
    draft = run.draft()
    assert draft.fields or draft.leftover == text.strip()


# -- the real app ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_parsed_draft_fills_the_create_form_and_a_stopped_one_keeps_what_came(app_env) -> None:
    at = new_app("pages/create.py")
    at.session_state["draft_done_0"] = (FENCED, None)  # what "Draft the profile" leaves for the next run
    at.run()
    inputs = {t.label: t.value for t in at.text_input} | {t.label: t.value for t in at.text_area}
    assert inputs["Name"] == "Seraphina"
    assert inputs["Description"].startswith("A tall elf") and inputs["Tags (comma separated)"] == "fantasy, elf, healer"
    assert inputs["Greeting (first message)"].startswith("*She kneels")
    assert any("Drafted 7 fields" in s.value for s in at.success)
    at.session_state["draft_partial_0"] = ('{"scenario": "A rainy harbour at night", "greeting": "Oi', "scenario")
    at.run()  # Stop ended that run: only the field asked for lands, the rest stays
    inputs = {t.label: t.value for t in at.text_area}
    assert inputs["Scenario"] == "A rainy harbour at night" and inputs["Description"].startswith("A tall elf")
    assert any("Stopped" in w.value for w in at.success)


@pytest.mark.slow
def test_read_the_sheet_on_create_with_the_tiny_model(app_env, neutral_png) -> None:
    at = new_app("pages/create.py")
    assert at.button(key="draft_all_0").disabled  # no sheet yet: nothing to read
    next(t for t in at.text_area if t.label == "Notes").set_value("Guardian of the forest")
    at.file_uploader(key="main_0").set_value(("sheet.png", neutral_png, "image/png")).run()
    at.button(key="draft_all_0").click().run(timeout=300)
    assert not at.exception
    notes_now = next(t.value for t in at.text_area if t.label == "Notes")
    filled = [t.value for t in [*at.text_input, *at.text_area] if t.label != "Notes" and t.value]
    assert notes_now.startswith("Guardian of the forest")
    assert len(notes_now) > len("Guardian of the forest") or any(filled)  # the gibberish went somewhere visible


@pytest.mark.slow
def test_the_library_editor_drafts_one_field_with_the_tiny_model_and_saves_the_edit(app_env, app_db, neutral_png):
    from sqlmodel import Session

    from storage.tables import Character
    from tests.test_app import seed_character

    sera = seed_character(app_db, neutral_png, description="Old description.")
    at = new_app("pages/library.py")
    at.button(key=f"edit_{sera}").click().run()
    at.selectbox(key=f"draft_field_e{sera}_en").set_value("Description")
    at.button(key=f"draft_one_e{sera}").click().run(timeout=300)  # reads the stored sheet, streams, fills
    assert not at.exception
    assert any(m.value for m in [*at.success, *at.warning])  # says what it did: a field drafted, or text to the notes
    at.session_state[f"draft_done_e{sera}"] = (FENCED, "description")  # a well-formed answer for that field
    at.run()
    assert next(t.value for t in at.text_area if t.label == "Description").startswith("A tall elf")
    assert next(t.value for t in at.text_input if t.label == "Name") == "Seraphina"  # the other fields stay
    at.button(key=f"FormSubmitter:editor_{sera}-Save").click().run()
    with Session(app_db) as s:
        assert s.get(Character, sera).description.startswith("A tall elf")


@pytest.mark.slow
def test_a_model_that_cannot_load_says_why_where_the_draft_was_asked(app_env, neutral_png, monkeypatch) -> None:
    monkeypatch.setenv("REFSHEET_MODEL", str(app_env / "no-such-model"))
    at = new_app("pages/create.py")
    at.file_uploader(key="main_0").set_value(("sheet.png", neutral_png, "image/png")).run()
    at.button(key="draft_all_0").click().run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)  # said here, not on another page's next run
    at.button(key="draft_retry_0").click().run()  # tries again (and would draft): still no model, said again
    assert any("does not exist" in e.value for e in at.error)
