"""Booking by conversation: offer free slots, hold the chosen one, confirm; list, reschedule and cancel.

The engine stays the one that decides; Redis is behind a :class:`BookingPort` (the scheduling core's
``Book`` fits it; tests may pass an in-memory one). Each booking call carries a request id derived
from the inbound message being handled, so a retried turn repeats the same request and books nothing
twice. What the person is in the middle of (offered slots, a held appointment...) is kept as JSON in
the chat state field ``booking``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from wsm.conversation.dates import When, fold, parse_when
from wsm.schedule.config import Schedule
from wsm.schedule.errors import BookingError, HoldExpired, LimitReached, SlotUnavailable
from wsm.schedule.model import Appointment, Slot

PAGE = 5  # slots offered at once
WEEKDAY_NAMES = ("segunda", "terça", "quarta", "quinta", "sexta", "sábado", "domingo")
YES = frozenset({"1", "sim", "s", "confirmo", "confirmar", "ok", "isso"})
NO = frozenset({"2", "nao", "n"})
ACTIONS = ("book", "list", "reschedule", "cancel")

# Texts of the booking conversation; a flow file may override any of them under ``texts``.
TEXTS = {
    "slots_intro": "Horários livres para {service}:",
    "slots_hint": 'Responda com o número, ou escreva o dia e a hora (ex.: "sexta à tarde", "15/12 às 14h").',
    "more_slots": "ver mais horários",
    "no_more_slots": "Não há mais horários além destes.",
    "confirm_slot": "Confirma {service} {when} com {provider}?\n1. Sim\n2. Não",
    "booked": 'Agendado! ✅ {service} {when} com {provider}. Para remarcar ou cancelar, envie "meus agendamentos".',
    "slot_taken": "Que pena: esse horário acabou de ser ocupado por outra pessoa.",
    "hold_expired": "O tempo para confirmar acabou e o horário foi liberado.",
    "date_unknown": 'Não entendi a data. Escreva por exemplo "amanhã", "sexta de manhã" ou "15/12 às 14h".',
    "date_past": "Essa data já passou.",
    "no_slots": "Não encontrei horários livres{query}. Quer entrar na lista de espera?\n1. Sim\n2. Não",
    "waitlist_joined": "Pronto, você está na lista de espera. Avisaremos por aqui quando abrir um horário.",
    "limit_reached": "Você já tem o máximo de agendamentos futuros. Para marcar outro, remarque ou cancele um deles.",
    "my_appointments": "Seus agendamentos:",
    "no_appointments": "Você não tem agendamentos futuros.",
    "manage_hint": 'Para remarcar, envie "remarcar"; para cancelar, "cancelar".',
    "pick_appointment": "Qual agendamento?",
    "confirm_cancel": "Cancelar {service} {when} com {provider}?\n1. Sim\n2. Não",
    "cancelled": "Agendamento cancelado: {service} {when}.",
    "kept": "Tudo bem, nada foi alterado.",
    "confirm_reschedule": "Remarcar {service} para {when} com {provider}?\n1. Sim\n2. Não",
    "rescheduled": "Remarcado! ✅ {service} {when} com {provider}.",
    "reminder": "Lembrete: {service} {when} com {provider}.\n1. Confirmar\n2. Remarcar\n3. Cancelar",
    "reminder_confirmed": "Obrigado! Esperamos você {when}.",
    "waitlist_offer": "Abriu um horário: {service} {when} com {provider}. Quer ficar com ele?\n1. Sim\n2. Não",
    "offer_declined": "Tudo bem, passamos a vaga para a próxima pessoa.",
    "booking_unavailable": "O agendamento por aqui está indisponível no momento. Tente mais tarde.",
}


class BookingPort(Protocol):
    """What the conversation needs from the scheduling core (``wsm.schedule.book.Book`` provides it)."""

    schedule: Schedule

    def slots(
        self,
        service: str,
        provider: str | None = None,
        date_from: Any = None,
        date_to: Any = None,
        part_of_day: str | None = None,
        limit: int = 10,
    ) -> list[Slot]: ...
    def hold(self, slot_id: str, chat: str, request_id: str) -> Appointment: ...
    def confirm(self, appointment_id: str, chat: str, request_id: str) -> Appointment: ...
    def cancel(self, appointment_id: str, chat: str | None, request_id: str) -> Appointment: ...
    def reschedule(self, appointment_id: str, slot_id: str, chat: str, request_id: str) -> Appointment: ...
    def appointments(self, chat: str, upcoming_only: bool = True) -> list[Appointment]: ...
    def get(self, appointment_id: str) -> Appointment | None: ...
    def join_waitlist(self, chat: str, service: str, provider: str | None = None, day: Any = None) -> Any: ...


@dataclass
class Outcome:
    """What one message did to the booking conversation; ``done`` hands control back to the flow."""

    replies: list[str] = field(default_factory=list)
    state: dict[str, Any] | None = None  # the new ``booking`` state; None = finished
    done: str = ""  # "" (still talking) | "booked" | "rescheduled" | "cancelled" | "kept" | "listed" | "waitlist"


class BookingTalk:
    """The booking sub-conversation; every method returns what to say and the next ``booking`` state."""

    def __init__(self, port: BookingPort, texts: dict[str, str], clock: Any = None) -> None:
        self.port = port
        self.schedule = port.schedule
        self.texts = {**TEXTS, **{k: v for k, v in texts.items() if k in TEXTS}}
        self.clock = clock or (lambda: datetime.now(self.schedule.tz))

    # --- describing ---------------------------------------------------------------------------------

    def when_text(self, start: datetime) -> str:
        local = start.astimezone(self.schedule.tz)
        return f"{WEEKDAY_NAMES[local.weekday()]} {local:%d/%m} às {local:%H:%M}"

    def values(self, service: str, provider: str, start: datetime) -> dict[str, str]:
        svc = self.schedule.services.get(service)
        prov = self.schedule.providers.get(provider)
        return {
            "service": svc.name if svc else service,
            "provider": prov.name if prov else provider,
            "when": self.when_text(start),
        }

    def say(self, name: str, **values: str) -> str:
        return self.texts[name].format(**values)

    def about(self, name: str, apt: Appointment) -> str:
        return self.say(name, **self.values(apt.service, apt.provider, apt.start_dt))

    # --- entry points -------------------------------------------------------------------------------

    def start(self, action: str, chat: str, service: str = "", provider: str | None = None) -> Outcome:
        """Enter the booking conversation: offer slots, list appointments, or pick one to change."""
        if action == "book":
            return self._offer({"mode": "pick", "action": "book", "service": service, "provider": provider})
        upcoming = self._upcoming(chat)
        if not upcoming:
            return Outcome([self.texts["no_appointments"]], None, "listed")
        if action == "list":
            lines = [self.texts["my_appointments"]]
            lines += [f"• {self.about_line(a)}" for a in upcoming]
            return Outcome(["\n".join([*lines, self.texts["manage_hint"]])], None, "listed")
        if len(upcoming) == 1:
            return self._target(action, chat, upcoming[0])
        lines = [self.texts["pick_appointment"]] + [f"{i}. {self.about_line(a)}" for i, a in enumerate(upcoming, 1)]
        return Outcome(["\n".join(lines)], {"mode": "choose", "action": action, "apts": [a.id for a in upcoming]})

    def from_notice(self, kind: str, apt_id: str, text: str, chat: str, request_id: str) -> Outcome | None:
        """The answer to a reminder or a waitlist offer; None when ``text`` does not answer it."""
        word = fold(text).strip(" .")
        apt = self.port.get(apt_id)
        if apt is None or apt.chat != chat:
            return None
        if kind == "offer":
            state = {"mode": "confirm", "action": "book", "apt": apt.id, "service": apt.service}
            if word in YES | NO:
                return self._confirm_hold(state, word in YES, chat, request_id, declined="offer_declined")
            return None
        choice = {"1": "confirm", "confirmar": "confirm", "2": "reschedule", "remarcar": "reschedule"}
        choice |= {"3": "cancel", "cancelar": "cancel"}
        picked = choice.get(word)
        if picked is None or str(apt.status) != "booked":
            return None
        if picked == "confirm":
            return Outcome([self.about("reminder_confirmed", apt)], None, "kept")
        return self._target(picked, chat, apt)

    def handle(self, state: dict[str, Any], text: str, chat: str, request_id: str) -> Outcome:
        """One message while in the booking conversation."""
        word = fold(text).strip(" .")
        mode = state.get("mode")
        if mode == "pick":
            return self._pick(state, word, text, chat, request_id)
        if mode == "confirm":
            if word not in YES | NO:
                return Outcome([self.texts["confirm_slot"].split("\n", 1)[-1]], state)
            if state.get("action") == "reschedule":
                return self._confirm_reschedule(state, word in YES, chat, request_id)
            return self._confirm_hold(state, word in YES, chat, request_id)
        if mode == "waitlist":
            if word in YES:
                day = date.fromisoformat(state["day"]) if state.get("day") else None
                self.port.join_waitlist(chat, state["service"], state.get("provider"), day)
                return Outcome([self.texts["waitlist_joined"]], None, "waitlist")
            return Outcome([self.texts["kept"]], None, "kept")
        if mode == "choose":
            apts = state.get("apts") or []
            if word.isdigit() and 1 <= int(word) <= len(apts):
                apt = self.port.get(apts[int(word) - 1])
                if apt is not None:
                    return self._target(state["action"], chat, apt)
            return self.start(state["action"], chat)
        if mode == "cancel":
            if word not in YES | NO:
                return Outcome([self.texts["confirm_cancel"].split("\n", 1)[-1]], state)
            if word in NO:
                return Outcome([self.texts["kept"]], None, "kept")
            try:
                apt = self.port.cancel(state["apt"], chat, request_id)
            except BookingError:
                return Outcome([self.texts["no_appointments"]], None, "kept")
            return Outcome([self.about("cancelled", apt)], None, "cancelled")
        return self._offer({**state, "mode": "pick"})

    def settle(self, state: dict[str, Any], yes: bool, chat: str, request_id: str) -> Outcome:
        """The person's answer to a confirmation the agent asked for: yes commits, no lets go; nothing is offered."""
        action = state.get("action")
        if not yes:
            if action == "book":
                self.release(state["apt"], chat, request_id)
            return Outcome([self.texts["kept"]], None, "kept")
        try:
            if action == "book":
                apt = self.port.confirm(state["apt"], chat, request_id + ":confirm")
                return Outcome([self.about("booked", apt)], None, "booked")
            if action == "reschedule":
                apt = self.port.reschedule(state["apt"], state["slot"], chat, request_id + ":reschedule")
                return Outcome([self.about("rescheduled", apt)], None, "rescheduled")
            apt = self.port.cancel(state["apt"], chat, request_id)
            return Outcome([self.about("cancelled", apt)], None, "cancelled")
        except HoldExpired:
            return Outcome([self.texts["hold_expired"]], None, "failed")
        except BookingError:
            return Outcome([self.texts["slot_taken" if action != "cancel" else "no_appointments"]], None, "failed")

    def release(self, apt_id: str, chat: str, request_id: str) -> None:
        """Let a held slot go (the person left or went back to the menu before confirming)."""
        with contextlib.suppress(BookingError):  # expired or gone already: nothing is held
            self.port.cancel(apt_id, chat, request_id + ":release")

    # --- steps --------------------------------------------------------------------------------------

    def about_line(self, apt: Appointment) -> str:
        v = self.values(apt.service, apt.provider, apt.start_dt)
        return f"{v['service']} {v['when']} com {v['provider']}"

    def _upcoming(self, chat: str) -> list[Appointment]:
        return [a for a in self.port.appointments(chat) if str(a.status) == "booked"]

    def _target(self, action: str, chat: str, apt: Appointment) -> Outcome:
        if action == "cancel":
            return Outcome([self.about("confirm_cancel", apt)], {"mode": "cancel", "action": "cancel", "apt": apt.id})
        state = {"mode": "pick", "action": "reschedule", "apt": apt.id, "service": apt.service}
        return self._offer(state | {"provider": apt.provider})

    def _search(self, state: dict[str, Any]) -> list[Slot]:
        when = state.get("when") or {}
        day = datetime.fromisoformat(when["day"]).date() if when.get("day") else None
        page = int(state.get("page") or 0)
        want = (page + 1) * PAGE
        at = when.get("at")
        found = self.port.slots(
            state["service"], state.get("provider"), day, day, when.get("part"), limit=want if not at else 200
        )
        if at:
            hh, mm = (int(x) for x in at.split(":"))
            target = hh * 60 + mm

            def distance(slot: Slot) -> tuple[int, datetime]:
                local = slot.start.astimezone(self.schedule.tz)
                return abs(local.hour * 60 + local.minute - target), slot.start

            found = sorted(found, key=distance)  # the asked time first, then the nearest ones
        return found[page * PAGE : want]

    def _offer(self, state: dict[str, Any], lead: list[str] | None = None) -> Outcome:
        replies = list(lead or [])
        slots = self._search(state)
        if not slots and int(state.get("page") or 0) > 0:
            state = {**state, "page": int(state["page"]) - 1}
            replies.append(self.texts["no_more_slots"])
            slots = self._search(state)
        if not slots:
            when = state.get("when") or {}
            query = f" para {self._describe(when)}" if when else ""
            replies.append(self.say("no_slots", query=query))
            waitlist = {"mode": "waitlist", "service": state["service"], "provider": state.get("provider")}
            return Outcome(replies, waitlist | {"day": when.get("day")})
        service = self.values(state["service"], slots[0].provider, slots[0].start)["service"]
        lines = [self.say("slots_intro", service=service)]
        for i, slot in enumerate(slots, 1):
            v = self.values(slot.service, slot.provider, slot.start)
            lines.append(f"{i}. {v['when']} com {v['provider']}")
        lines.append(f"{len(slots) + 1}. {self.texts['more_slots']}")
        lines.append(self.texts["slots_hint"])
        replies.append("\n".join(lines))
        return Outcome(replies, {**state, "mode": "pick", "slots": [s.slot_id for s in slots]})

    def _describe(self, when: dict[str, str]) -> str:
        bits = []
        if when.get("day"):
            day = datetime.fromisoformat(when["day"]).date()
            bits.append(f"{WEEKDAY_NAMES[day.weekday()]} {day:%d/%m}")
        if when.get("at"):
            bits.append(f"às {when['at']}")
        if when.get("part"):
            bits.append({"manha": "de manhã", "tarde": "à tarde", "noite": "à noite"}[when["part"]])
        return " ".join(bits)

    def _pick(self, state: dict[str, Any], word: str, text: str, chat: str, request_id: str) -> Outcome:
        offered = state.get("slots") or []
        if word.isdigit() and 1 <= int(word) <= len(offered):
            return self._choose(state, offered[int(word) - 1], chat, request_id)
        if (word.isdigit() and int(word) == len(offered) + 1) or word in (fold(self.texts["more_slots"]), "mais"):
            return self._offer({**state, "page": int(state.get("page") or 0) + 1})
        now = self.clock()
        when = parse_when(text, now)
        if when is None:
            return Outcome([self.texts["date_unknown"]], state)
        if when.day is not None and when.day < now.date():
            return Outcome([self.texts["date_past"]], state)
        return self._offer({**state, "page": 0, "when": _when_json(when)})

    def _choose(self, state: dict[str, Any], slot_id: str, chat: str, request_id: str) -> Outcome:
        fresh = {**state, "page": 0}
        if state.get("action") == "reschedule":
            slot = next((s for s in self._search(state) if s.slot_id == slot_id), None)
            if slot is None:
                return self._offer(fresh, [self.texts["slot_taken"]])
            text = self.say("confirm_reschedule", **self.values(slot.service, slot.provider, slot.start))
            return Outcome([text], {**state, "mode": "confirm", "slot": slot_id})
        try:
            apt = self.port.hold(slot_id, chat, request_id + ":hold")
        except LimitReached:
            return Outcome([self.texts["limit_reached"]], None, "kept")
        except BookingError:  # taken meanwhile, or no longer bookable
            return self._offer(fresh, [self.texts["slot_taken"]])
        return Outcome([self.about("confirm_slot", apt)], {**state, "mode": "confirm", "apt": apt.id})

    def _confirm_hold(
        self, state: dict[str, Any], yes: bool, chat: str, request_id: str, declined: str = "kept"
    ) -> Outcome:
        if not yes:
            self.release(state["apt"], chat, request_id)
            if declined == "offer_declined":
                return Outcome([self.texts["offer_declined"]], None, "kept")
            return self._offer({**state, "mode": "pick", "page": 0})
        try:
            apt = self.port.confirm(state["apt"], chat, request_id + ":confirm")
        except HoldExpired:
            return self._offer({**state, "mode": "pick", "page": 0}, [self.texts["hold_expired"]])
        except SlotUnavailable:
            return self._offer({**state, "mode": "pick", "page": 0}, [self.texts["slot_taken"]])
        except BookingError:
            return self._offer({**state, "mode": "pick", "page": 0}, [self.texts["hold_expired"]])
        return Outcome([self.about("booked", apt)], None, "booked")

    def _confirm_reschedule(self, state: dict[str, Any], yes: bool, chat: str, request_id: str) -> Outcome:
        if not yes:
            return self._offer({**state, "mode": "pick", "page": 0})
        try:
            apt = self.port.reschedule(state["apt"], state["slot"], chat, request_id + ":reschedule")
        except BookingError:
            return self._offer({**state, "mode": "pick", "page": 0}, [self.texts["slot_taken"]])
        return Outcome([self.about("rescheduled", apt)], None, "rescheduled")


def _when_json(when: When) -> dict[str, str]:
    out = {}
    if when.day:
        out["day"] = when.day.isoformat()
    if when.at:
        out["at"] = when.at.strftime("%H:%M")
    if when.part_of_day:
        out["part"] = when.part_of_day
    return out


def dumps(state: dict[str, Any] | None) -> str:
    return json.dumps(state, ensure_ascii=False) if state else ""


def loads(raw: str | None) -> dict[str, Any] | None:
    return json.loads(raw) if raw else None
