"""The one thread that runs the model's work (loading, prefill, generate): torch's for the transformers
backend, llama.cpp's for the GGUF one (this llama.cpp build is OpenMP-threaded too).

Why one thread: on CPU, OpenMP keeps its worker threads spin-waiting between parallel regions, and
libgomp throttles that spinning as soon as more OpenMP threads exist than cores — which happens the
moment a second Python thread runs parallel torch work. Measured here (2 cores, Gemma 3 270M bf16):
18.5 tokens/s when one thread does all torch work, 14 tokens/s once another thread has too. So the
model's work is queued onto this single long-lived thread; callers stream results from their own
threads (a Streamlit script thread, a test, the benchmark).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
THREAD_NAME = "refsheet-model"
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)


def on_model_thread() -> bool:
    return threading.current_thread().name.startswith(THREAD_NAME)


def submit(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
    """Queue `fn` on the model thread. Called from the model thread itself, it runs inline
    (queueing behind itself would wait forever)."""
    if not on_model_thread():
        return _executor.submit(fn, *args, **kwargs)
    future: Future[T] = Future()
    try:
        future.set_result(fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
        future.set_exception(exc)
    return future


def run(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run `fn` on the model thread and return its result (or raise its exception)."""
    return submit(fn, *args, **kwargs).result()
