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


@dataclass(frozen=True)
class Limit:
    """The values one reply setting may take, and how its input offers them: from `low` (excluded when
    `low_open`) to `high` (None: no upper bound; then the input stops at `input_high`), in `step`s."""

    low: float
    high: float | None
    step: float | None = None
    low_open: bool = False
    input_high: float | None = None

    def allows(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)

    @property
    def lowest(self) -> float:
        """The smallest value an input offers (one step above an excluded bound)."""
        return self.low + (self.step or 1) if self.low_open else self.low

    @property
    def highest(self) -> float:
        """The largest value an input offers."""
        return self.high if self.high is not None else self.input_high or 0


# The reply settings' limits, defined once: validation below and the Chat page's inputs read them.
LIMITS: dict[str, Limit] = {
    "temperature": Limit(0.0, 2.0, step=0.05),
    "top_p": Limit(0.0, 1.0, step=0.05, low_open=True),
    "top_k": Limit(0, None, input_high=1000),
    "max_new_tokens": Limit(1, 4096),
    "repetition_penalty": Limit(1.0, 2.0, step=0.05),
    "seed": Limit(0, None, input_high=2**31 - 1),
}


def _number(value: Any, optional: bool) -> bool:
    return (value is None and optional) or (isinstance(value, int | float) and not isinstance(value, bool))


def _problem(name: str, value: object) -> tuple[str, dict[str, Any]]:
    """The message for a bad `name`: its key, the value given, and the bounds from `LIMITS` (`low`, and
    `high` where there is one), so the sentence can never disagree with the check."""
    params: dict[str, Any] = {"value": value}
    if limit := LIMITS.get(name):
        bounds = {"low": limit.low, "high": limit.high}
        params |= {k: int(v) if float(v).is_integer() else v for k, v in bounds.items() if v is not None}
    return f"sampler.{name}", params


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
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if value is not None and not limit.allows(value):  # no seed: a new one each reply
                problems.append(_problem(name, value))
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            problems.append(_problem("min_new_tokens", self.min_new_tokens))
        if problems:
            raise InvalidSampler(problems)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> SamplerSettings:
        """From stored JSON: unknown keys are ignored, missing ones take defaults; a value that is not a
        number (a restored row from elsewhere) is `InvalidSampler`, like one out of range."""
        known = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        wrong = [_problem(k, str(v)[:40]) for k, v in known.items() if not _number(v, k == "seed")]
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
