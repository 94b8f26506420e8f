"""How replies are sampled: the settings a conversation saves, validated with messages a person reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.base.errors import UserError
from core.base.i18n import t


class InvalidSampler(UserError):
    """Sampler settings out of range; `problems` holds (i18n key, params) pairs, one per bad value."""

    namespace = "sampler"

    def __init__(self, problems: list[tuple[str, dict[str, Any]]]) -> None:
        self.problems = problems
        key, params = problems[0]
        super().__init__(key.removeprefix("sampler."), **params)

    def messages(self, lang: str = "en") -> list[str]:
        return [t(key, lang, **params) for key, params in self.problems]

    def message(self, lang: str = "en") -> str:
        return " ".join(self.messages(lang))


def _number(value: Any, optional: bool) -> bool:
    return (value is None and optional) or (isinstance(value, int | float) and not isinstance(value, bool))


@dataclass(frozen=True)
class SamplerSettings:
    """How replies are sampled. Gemma 3's recommended defaults; temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64
    max_new_tokens: int = 512
    repetition_penalty: float = 1.0
    seed: int | None = None
    min_new_tokens: int = 0  # not in the UI: benchmarks use it to force equal lengths

    def __post_init__(self) -> None:
        problems: list[tuple[str, dict[str, Any]]] = []
        if not 0 <= self.temperature <= 2:
            problems.append(("sampler.temperature", {"value": self.temperature}))
        if not 0 < self.top_p <= 1:
            problems.append(("sampler.top_p", {"value": self.top_p}))
        if self.top_k < 0:
            problems.append(("sampler.top_k", {"value": self.top_k}))
        if not 1 <= self.max_new_tokens <= 4096:
            problems.append(("sampler.max_new_tokens", {"value": self.max_new_tokens}))
        if not 1 <= self.repetition_penalty <= 2:
            problems.append(("sampler.repetition_penalty", {"value": self.repetition_penalty}))
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            problems.append(("sampler.min_new_tokens", {"value": self.min_new_tokens}))
        if self.seed is not None and self.seed < 0:
            problems.append(("sampler.seed", {"value": self.seed}))
        if problems:
            raise InvalidSampler(problems)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> SamplerSettings:
        """From stored JSON: unknown keys are ignored, missing ones take defaults; a value that is not a
        number (a restored row from elsewhere) is `InvalidSampler`, like one out of range."""
        known = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        wrong = [(f"sampler.{k}", {"value": str(v)[:40]}) for k, v in known.items() if not _number(v, k == "seed")]
        if wrong:
            raise InvalidSampler(wrong)
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": not self.greedy}
        if not self.greedy:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # the checkpoint's generation_config may carry sampling values; greedy ignores them
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.min_new_tokens:
            kwargs["min_new_tokens"] = self.min_new_tokens
        return kwargs
