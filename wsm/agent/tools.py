"""The agent's tools: their JSON schemas, and the server-side checks that run before any of them acts.

The model never names the chat (it is always the current one) and never commits: ``request_booking`` holds
a slot, ``request_cancel`` / ``request_reschedule`` only check; each returns a confirmation the engine asks
the person itself ("Confirma ...? 1. Sim 2. Não"), and only their yes books, cancels or moves (through the
booking talk's confirmation). A ``slot_id`` must have been returned by ``find_slots`` in this conversation
and still be free; an ``appointment_id`` must be the person's own. A refused call changes nothing and
answers ``{"error": ...}`` so the model can correct itself. Effects carry request ids made from the turn id
and the call's index, so a turn re-run after a crash holds nothing twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from wsm.conversation.booking import BookingTalk
from wsm.schedule.config import Provider
from wsm.schedule.errors import BookingError, LimitReached
from wsm.schedule.model import Appointment, Slot, parse_slot_id

PARTS_OF_DAY = ("manha", "tarde", "noite")
SLOTS_SHOWN = 8  # slots one find_slots answers with
OFFERED_MAX = 200  # slot ids remembered per conversation
REQUESTS = ("request_booking", "request_cancel", "request_reschedule")


def _fn(name: str, description: str, props: dict[str, dict[str, Any]], required: tuple[str, ...] = ()) -> dict:
    params = {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


_S = {"type": "string"}
_DATE = {"type": "string", "description": "YYYY-MM-DD, no fuso do negócio"}
TOOLS = [
    _fn("business_info", "Dados do negócio: endereço, telefone, serviços, profissionais e horários.", {}),
    _fn(
        "find_slots",
        "Horários livres de um serviço. Só ofereça horários devolvidos aqui.",
        {
            "service": {**_S, "description": "id do serviço (ver business_info)"},
            "date_from": _DATE,
            "date_to": _DATE,
            "provider": {**_S, "description": "id do profissional"},
            "part_of_day": {"type": "string", "enum": list(PARTS_OF_DAY)},
        },
        ("service",),
    ),
    _fn(
        "request_booking",
        "Reserva um horário (de find_slots) e o sistema pede a confirmação da pessoa; não confirma sozinho.",
        {"slot_id": _S},
        ("slot_id",),
    ),
    _fn("list_appointments", "Os agendamentos futuros da pessoa.", {}),
    _fn(
        "request_cancel",
        "Pede o cancelamento de um agendamento da pessoa; o sistema pede a confirmação dela.",
        {"appointment_id": _S},
        ("appointment_id",),
    ),
    _fn(
        "request_reschedule",
        "Pede para mudar um agendamento da pessoa para um horário de find_slots; o sistema pede a confirmação.",
        {"appointment_id": _S, "slot_id": _S},
        ("appointment_id", "slot_id"),
    ),
    _fn(
        "join_waitlist",
        "Coloca a pessoa na lista de espera de um serviço (quando não há horários).",
        {"service": _S, "date_from": _DATE, "date_to": _DATE, "provider": _S},
        ("service",),
    ),
    _fn(
        "handoff_to_human",
        "Passa a conversa a um atendente humano.",
        {"reason": {**_S, "description": "por que, em poucas palavras"}},
        ("reason",),
    ),
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


class BadArguments(ValueError):
    """The model's arguments do not fit the tool's schema (or name nothing we know)."""


@dataclass
class Effect:
    """A tool's answer to the model, plus what the engine must do: ask a confirmation, or hand off."""

    result: dict[str, Any]
    pending: dict[str, Any] | None = None  # the booking talk's confirmation state ("mode": confirm | cancel)
    question: str = ""  # what the engine asks the person
    handoff: str = ""  # the reason, when the model asked for a human


class ToolBox:
    """The tools of one chat for one turn; ``offered`` (slot ids found in this conversation) grows as it runs."""

    def __init__(self, talk: BookingTalk, chat: str, offered: list[str]) -> None:
        self.talk = talk
        self.port = talk.port
        self.schedule = talk.schedule
        self.chat = chat
        self.offered = list(offered)

    def run(self, name: str, raw_arguments: str, request_id: str) -> Effect:
        """Check and run one call; every refusal is an ``{"error": ...}`` answer that changed nothing."""
        if name not in SCHEMAS:
            return Effect({"error": f"unknown tool {name!r}; the tools are: {', '.join(SCHEMAS)}"})
        try:
            args = self._arguments(name, raw_arguments)
            return getattr(self, "_" + name)(request_id=request_id, **args)
        except BadArguments as e:
            return Effect({"error": f"invalid arguments for {name}: {e}"})
        except BookingError as e:
            return Effect({"error": f"{type(e).__name__}: {e}"})

    # --- checking --------------------------------------------------------------------------------------

    def _arguments(self, name: str, raw: str) -> dict[str, Any]:
        schema = SCHEMAS[name]
        try:
            args = json.loads(raw or "{}")
        except ValueError as e:
            raise BadArguments(f"not JSON ({e})") from e
        if not isinstance(args, dict):
            raise BadArguments("arguments must be a JSON object")
        args = {k: v for k, v in args.items() if v not in (None, "")}  # models send null for "not given"
        unknown = set(args) - set(schema["properties"])
        missing = [k for k in schema["required"] if k not in args]
        if unknown or missing:
            raise BadArguments(f"unknown {sorted(unknown)}, missing {missing}".replace("unknown [], ", ""))
        if not all(isinstance(v, str) for v in args.values()):
            raise BadArguments("every argument is a string")
        for key in ("date_from", "date_to"):
            if key in args:
                try:
                    args[key] = date.fromisoformat(args[key])
                except ValueError as e:
                    raise BadArguments(f"{key} must be YYYY-MM-DD, got {args[key]!r}") from e
        if args.get("part_of_day", "manha") not in PARTS_OF_DAY:
            raise BadArguments(f"part_of_day must be one of {', '.join(PARTS_OF_DAY)}")
        if "service" in args and args["service"] not in self.schedule.services:
            raise BadArguments(f"unknown service {args['service']!r}; known: {', '.join(self.schedule.services)}")
        if "provider" in args and args["provider"] not in self.schedule.providers:
            raise BadArguments(f"unknown provider {args['provider']!r}; known: {', '.join(self.schedule.providers)}")
        return args

    def _offered_slot(self, slot_id: str) -> Slot:
        if slot_id not in self.offered:
            raise BadArguments(f"slot_id {slot_id!r} was not returned by find_slots in this conversation")
        return parse_slot_id(slot_id, self.schedule)

    def _own(self, appointment_id: str) -> Appointment:
        apt = self.port.get(appointment_id)
        if apt is None or apt.chat != self.chat:
            raise BadArguments(f"appointment {appointment_id!r} is not one of this person's appointments")
        if str(apt.status) != "booked":
            raise BadArguments(f"appointment {appointment_id!r} is {apt.status}, not booked")
        return apt

    def _describe_slot(self, slot: Slot) -> dict[str, str]:
        v = self.talk.values(slot.service, slot.provider, slot.start)
        start = slot.start.astimezone(self.schedule.tz).isoformat(timespec="minutes")
        return {
            "slot_id": slot.slot_id,
            "start": start,
            "when": v["when"],
            "provider": slot.provider,
            "provider_name": v["provider"],
        }

    def _describe_apt(self, apt: Appointment) -> dict[str, str]:
        v = self.talk.values(apt.service, apt.provider, apt.start_dt)
        start = apt.start_dt.astimezone(self.schedule.tz).isoformat(timespec="minutes")
        return {
            "appointment_id": apt.id,
            "service": apt.service,
            "provider": apt.provider,
            "start": start,
            "when": v["when"],
            "status": str(apt.status),
        }

    # --- the tools -------------------------------------------------------------------------------------

    def _business_info(self, request_id: str) -> Effect:
        s = self.schedule
        return Effect(
            {
                "business": s.business.name,
                "address": s.business.address,
                "phone": s.business.phone,
                "timezone": s.timezone,
                "services": [{"id": v.id, "name": v.name, "duration_min": v.duration_min} for v in s.services.values()],
                "providers": [
                    {"id": p.id, "name": p.name, "services": list(p.services), "hours": _hours(p)}
                    for p in s.providers.values()
                ],
            }
        )

    def _find_slots(
        self,
        request_id: str,
        service: str,
        date_from: date | None = None,
        date_to: date | None = None,
        provider: str | None = None,
        part_of_day: str | None = None,
    ) -> Effect:
        if provider and service not in self.schedule.providers[provider].services:
            raise BadArguments(f"provider {provider!r} does not offer {service!r}")
        found = self.port.slots(service, provider, date_from, date_to or date_from, part_of_day, limit=SLOTS_SHOWN)
        self.offered = (self.offered + [s.slot_id for s in found if s.slot_id not in self.offered])[-OFFERED_MAX:]
        slots = [self._describe_slot(s) for s in found]
        if not slots:
            return Effect({"slots": [], "note": "nenhum horário livre; ofereça a lista de espera (join_waitlist)"})
        return Effect({"service": service, "slots": slots})

    def _request_booking(self, request_id: str, slot_id: str) -> Effect:
        self._offered_slot(slot_id)
        try:
            apt = self.port.hold(slot_id, self.chat, request_id + ":hold")
        except LimitReached as e:
            return Effect({"error": f"LimitReached: {e}; offer to reschedule or cancel one"})
        except BookingError as e:
            return Effect({"error": f"the slot is no longer free ({type(e).__name__}); call find_slots again"})
        pending = {"mode": "confirm", "action": "book", "apt": apt.id, "service": apt.service}
        result = {"status": "awaiting_confirmation", "appointment_id": apt.id, "note": "the person is asked now"}
        return Effect(result, pending, self.talk.about("confirm_slot", apt))

    def _list_appointments(self, request_id: str) -> Effect:
        upcoming = [a for a in self.port.appointments(self.chat) if str(a.status) == "booked"]
        return Effect({"appointments": [self._describe_apt(a) for a in upcoming]})

    def _request_cancel(self, request_id: str, appointment_id: str) -> Effect:
        apt = self._own(appointment_id)
        pending = {"mode": "cancel", "action": "cancel", "apt": apt.id}
        return Effect({"status": "awaiting_confirmation"}, pending, self.talk.about("confirm_cancel", apt))

    def _request_reschedule(self, request_id: str, appointment_id: str, slot_id: str) -> Effect:
        apt = self._own(appointment_id)
        slot = self._offered_slot(slot_id)
        if slot.service != apt.service:
            raise BadArguments(f"slot {slot_id!r} is for {slot.service!r}, the appointment is {apt.service!r}")
        day = slot.start.astimezone(self.schedule.tz).date()
        free = self.port.slots(slot.service, slot.provider, day, day, limit=500)
        if not any(s.slot_id == slot_id for s in free):
            return Effect({"error": "the slot is no longer free; call find_slots again"})
        pending = {"mode": "confirm", "action": "reschedule", "apt": apt.id, "slot": slot_id, "service": apt.service}
        values = self.talk.values(slot.service, slot.provider, slot.start)
        return Effect({"status": "awaiting_confirmation"}, pending, self.talk.say("confirm_reschedule", **values))

    def _join_waitlist(
        self,
        request_id: str,
        service: str,
        date_from: date | None = None,
        date_to: date | None = None,
        provider: str | None = None,
    ) -> Effect:
        self.port.join_waitlist(self.chat, service, provider, date_from)
        return Effect({"status": "joined", "note": "the person is told when a slot opens"})

    def _handoff_to_human(self, request_id: str, reason: str) -> Effect:
        return Effect({"status": "handing_off"}, handoff=reason[:200])


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hours(provider: Provider) -> dict[str, list[str]]:
    """Opening hours as the schedule file writes them: ``{"mon": ["08:00-12:00"], ...}``."""
    return {
        WEEKDAYS[day]: [f"{start:%H:%M}-{end:%H:%M}" for start, end in ranges]
        for day, ranges in sorted(provider.hours.items())
    }
