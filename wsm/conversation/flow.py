"""The declarative conversation flow: load a YAML/JSON file, validate it whole, explain every mistake.

A flow is a set of named steps. A step says something and then either offers
numbered ``options`` (each with a ``next`` step), ``collect``s the answer into a
field and goes to ``next``, ``end``s the conversation (``done`` or ``handoff``), or
runs a booking conversation (``schedule``: offer slots, hold, confirm; or list,
reschedule, cancel the person's appointments) and then goes to ``next``, or hands the talk to the AI
agent (``agent``: a language model answering with the business's tools, opt-in; see :mod:`wsm.agent`).
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from wsm.core.errors import WsmError
from wsm.core.status import EndReason

REQUIRED_TEXTS = (
    "welcome",
    "your_turn",
    "resumed",
    "invalid_option",
    "queued",
    "position_update",
    "left_queue",
    "goodbye",
    "idle_closed",
)
END_KINDS = (EndReason.DONE, EndReason.HANDOFF)  # how a flow step may end a conversation
SCHEDULE_ACTIONS = ("book", "list", "reschedule", "cancel")
BOOKING_WORDS = {  # words that start a booking action from anywhere in a conversation
    "appointments": ["meus agendamentos", "agendamentos", "minhas consultas"],
    "reschedule": ["remarcar"],
    "cancel": ["cancelar", "cancelar agendamento"],
}


class FlowError(WsmError):
    """The flow file is invalid; the message lists every problem found."""


@dataclass(frozen=True)
class Option:
    key: str
    label: str
    next: str


@dataclass(frozen=True)
class ScheduleSpec:
    """A ``schedule`` step: which action, for which service (and provider), and where to go after."""

    action: str = "book"
    service: str = ""
    provider: str | None = None


@dataclass(frozen=True)
class AgentSpec:
    """An ``agent`` step: the model's instructions (read from their file at start-up) and where to fall back."""

    instructions: str
    instructions_file: str
    fallback: str | None = None  # a step to enter when the model fails ("" / None: hand off to a human)
    share_phone: bool = False  # tell the model the person's phone number (off: it never sees it)


@dataclass(frozen=True)
class Step:
    name: str
    say: str
    options: tuple[Option, ...] = ()
    collect: str | None = None
    next: str | None = None
    end: EndReason | None = None
    schedule: ScheduleSpec | None = None
    agent: AgentSpec | None = None


@dataclass(frozen=True)
class Flow:
    name: str
    start: str
    vars: dict[str, str]
    texts: dict[str, str]
    leave_words: frozenset[str]
    menu_words: frozenset[str]
    steps: dict[str, Step]
    booking_words: dict[str, frozenset[str]]  # "appointments" | "reschedule" | "cancel" -> words

    def schedule_problems(self, services: set[str], providers: set[str]) -> list[str]:
        """What in this flow the loaded schedule cannot serve (an unknown service or provider)."""
        problems = []
        for step in self.steps.values():
            spec = step.schedule
            if spec and spec.service and spec.service not in services:
                problems.append(f"step {step.name!r} books unknown service {spec.service!r}")
            if spec and spec.provider and spec.provider not in providers:
                problems.append(f"step {step.name!r} books with unknown provider {spec.provider!r}")
        return problems

    @property
    def books(self) -> bool:
        return any(step.schedule or step.agent for step in self.steps.values())

    @property
    def uses_agent(self) -> bool:
        return any(step.agent for step in self.steps.values())


def load_flow(path: str | Path | None = None) -> Flow:
    """The flow at ``path``, or the default pt-BR flow shipped with the package."""
    if not path:
        return _default_flow()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise FlowError(f"cannot read flow file {path}: {e}") from e
    return parse_flow(data, Path(path).parent)


FLOWS_DIR = Path(str(resources.files("wsm.conversation").joinpath("flows")))


@cache
def _default_flow() -> Flow:
    return load_flow(FLOWS_DIR / "default.pt-BR.yaml")


def parse_flow(data: Any, base: Path | None = None) -> Flow:
    """A flow from its parsed file; ``base`` is the folder relative ``instructions`` files are read from."""
    if not isinstance(data, dict):
        raise FlowError("a flow must be a mapping with 'start', 'texts' and 'steps'")
    problems: list[str] = []
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        raise FlowError("'steps' must be a non-empty mapping of step name to step")
    steps = {name: _parse_step(str(name), raw, problems, base or FLOWS_DIR) for name, raw in raw_steps.items()}
    start = data.get("start")
    if start not in steps:
        problems.append(f"'start' must name a step, got {start!r}")
    for step in steps.values():
        targets = [o.next for o in step.options] + ([step.next] if step.next else [])
        targets += [step.agent.fallback] if step.agent and step.agent.fallback else []
        problems += [f"step {step.name!r} goes to unknown step {t!r}" for t in targets if t not in steps]
    texts = {str(k): str(v) for k, v in _mapping(data, "texts", problems).items()}
    problems += [f"texts.{name} is missing" for name in REQUIRED_TEXTS if name not in texts]
    words = _mapping(data, "words", problems)
    flow_vars = {str(k): str(v) for k, v in _mapping(data, "vars", problems).items()}
    templates = [(f"texts.{k}", v) for k, v in texts.items()] + [(f"step {st.name!r}", st.say) for st in steps.values()]
    problems += [problem for where, text in templates if (problem := _template_problem(where, text))]

    def word_set(key: str, default: list[str]) -> frozenset[str]:
        return frozenset(normalize(w) for w in _word_list(words, key, default, problems))

    leave, menu = word_set("leave", ["sair", "encerrar", "exit", "quit"]), word_set("menu", ["menu"])
    booking_words = {k: word_set(k, v) for k, v in BOOKING_WORDS.items()}
    if problems:
        raise FlowError("invalid flow: " + "; ".join(problems))
    return Flow(
        name=str(data.get("name", "flow")),
        start=start,
        vars=flow_vars,
        texts=texts,
        leave_words=leave,
        menu_words=menu,
        steps=steps,
        booking_words=booking_words,
    )


def _mapping(data: dict, key: str, problems: list[str]) -> dict:
    """An optional section that must be a mapping when present ({} when absent)."""
    value = data.get(key) or {}
    if not isinstance(value, dict):
        problems.append(f"'{key}' must be a mapping, got {type(value).__name__}")
        return {}
    return value


def _word_list(words: dict, key: str, default: list[str], problems: list[str]) -> list[str]:
    """``words.<key>``: a list of words (one word alone is taken as a list of one, never split into letters)."""
    value = words.get(key, default)
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        problems.append(f"words.{key} must be a list of words")
        return []
    return value


def _template_problem(where: str, text: str) -> str | None:
    """A text the engine could not render: broken braces or a positional ``{}`` field (names are required)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as e:
        return f"{where}: {e} (write {{{{ and }}}} for literal braces)"
    if any(not name or name.isdigit() or not name.isidentifier() for name in fields):
        return f"{where}: placeholders must be names such as {{business}}"
    return None


def _parse_step(name: str, raw: Any, problems: list[str], base: Path) -> Step:
    optional_say = isinstance(raw, dict) and ("schedule" in raw or "agent" in raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("say", "" if optional_say else None), str):
        problems.append(f"step {name!r} must be a mapping with a 'say' text")
        return Step(name, "")
    options = tuple(
        Option(str(o.get("key")), str(o.get("label", "")), str(o.get("next")))
        for o in raw.get("options") or []
        if isinstance(o, dict)
    )
    end = raw.get("end")
    known_end = EndReason(end) if end in END_KINDS else None
    spec = _parse_schedule(name, raw.get("schedule"), problems) if "schedule" in raw else None
    agent = _parse_agent(name, raw.get("agent"), problems, base) if "agent" in raw else None
    step = Step(name, raw.get("say", ""), options, raw.get("collect"), raw.get("next"), known_end, spec, agent)
    kinds = sum([bool(step.options), bool(step.collect), bool(end), "schedule" in raw, "agent" in raw])
    if kinds != 1:
        problems.append(
            f"step {name!r} needs exactly one of 'options', 'collect' (with 'next'), 'end', 'schedule' (with 'next')"
            " or 'agent'"
        )
    if "schedule" in raw and not step.next:
        problems.append(f"step {name!r} runs a schedule but has no 'next'")
    if step.collect and not step.next:
        problems.append(f"step {name!r} collects {step.collect!r} but has no 'next'")
    if end and end not in END_KINDS:
        problems.append(f"step {name!r}: 'end' must be one of {', '.join(END_KINDS)}")
    return step


def _parse_schedule(name: str, raw: Any, problems: list[str]) -> ScheduleSpec:
    if not isinstance(raw, dict):
        problems.append(f"step {name!r}: 'schedule' must be a mapping like {{service: consulta}}")
        return ScheduleSpec()
    unknown = set(raw) - {"action", "service", "provider"}
    if unknown:
        problems.append(f"step {name!r}: unknown schedule field(s) {', '.join(sorted(map(str, unknown)))}")
    spec = ScheduleSpec(str(raw.get("action", "book")), str(raw.get("service") or ""), raw.get("provider"))
    if spec.action not in SCHEDULE_ACTIONS:
        problems.append(f"step {name!r}: schedule action must be one of {', '.join(SCHEDULE_ACTIONS)}")
    if spec.action == "book" and not spec.service:
        problems.append(f"step {name!r}: a booking schedule step needs a 'service'")
    return spec


def _parse_agent(name: str, raw: Any, problems: list[str], base: Path) -> AgentSpec | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("instructions"), str):
        problems.append(f"step {name!r}: 'agent' must be a mapping like {{instructions: agent.instructions.md}}")
        return None
    unknown = set(raw) - {"instructions", "fallback", "share_phone"}
    if unknown:
        problems.append(f"step {name!r}: unknown agent field(s) {', '.join(sorted(map(str, unknown)))}")
    path = base / raw["instructions"]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"step {name!r}: cannot read the agent's instructions {path}: {e}")
        return None
    fallback = raw.get("fallback")
    return AgentSpec(text, str(path), str(fallback) if fallback else None, raw.get("share_phone") is True)


def normalize(text: str) -> str:
    """Lower-case, trimmed, without accents or trailing punctuation: 'Sáir!' matches 'sair'."""
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip(" .!?")
