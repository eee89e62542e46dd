"""A rule-based "model" for the Chat Completions stand-in: a clinic receptionist that speaks Portuguese.

It is stateless like a real model: every answer is derived from the request alone — the system prompt (for
"now" and the services), the role-separated history and the tool results in it — and it uses only the tools
the request offers. It is naive on purpose: asked to "ignore the rules" it tries to book a slot it was never
offered, so ``make eval`` shows the server's checks holding even when the model does what it is told.
It lets ``make local`` and ``make eval`` run the whole agent path without a real model.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, time, timedelta
from typing import Any

from wsm.conversation.dates import When, fold, parse_when

ISO_NOW = re.compile(r"ISO (\d{4}-\d\d-\d\dT\d\d:\d\d[+-]\d\d:\d\d)")
SERVICES = re.compile(r"Serviços: (.*)")
ORDINALS = {"primeir": 1, "segund": 2, "terceir": 3, "quart": 4, "quint": 5, "sext": 6, "setim": 7, "oitav": 8}
HUMAN = ("atendente", "humano", "pessoa de verdade", "falar com alguem", "falar com uma pessoa")
INJECTION = ("ignore", "instrucoes", "sem perguntar", "sem confirmar", "[bot]", "sistema:", "modo desenvolvedor")
CANCEL = ("cancel", "desmarc")
RESCHEDULE = ("remarc", "mudar", "trocar", "transferir", "adiar")
BOOK = ("agend", "marcar", "consulta", "horario", "vaga", "atendimento", "retorno", "exame")
INFO = ("endereco", "onde fica", "funciona", "abre", "fecha", "telefone", "localiza")
LIST = ("meus agendamentos", "minhas consultas", "tenho consulta", "tenho agendamento", "quais agendamentos")
YES_WORDS = ("sim", "quero", "pode", "claro", "ok", "isso")


def _msg(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


_seq = iter(range(1, 10**9))


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    args = json.dumps({k: v for k, v in arguments.items() if v is not None}, ensure_ascii=False)
    call = {"id": f"rc_{next(_seq)}", "type": "function", "function": {"name": name, "arguments": args}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


class Receptionist:
    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        system = str(messages[0].get("content") or "") if messages else ""
        found = ISO_NOW.search(system)
        now = datetime.fromisoformat(found.group(1)) if found else datetime.now().astimezone()
        services = [part.split(" = ")[0].strip() for part in (SERVICES.search(system) or _NO).group(1).split(";")]
        talk = _Talk(messages, now, [s for s in services if s] or ["consulta"])
        return talk.after_tool() if messages and messages[-1].get("role") == "tool" else talk.on_user()


class _NoMatch:
    def group(self, _: int) -> str:
        return ""


_NO = _NoMatch()


class _Talk:
    def __init__(self, messages: list[dict[str, Any]], now: datetime, services: list[str]) -> None:
        self.messages = messages
        self.now = now
        self.services = services

    # --- reading the request ---------------------------------------------------------------------------

    def user_text(self) -> str:
        """The newest user messages (a burst counts as one), folded."""
        texts: list[str] = []
        for m in reversed(self.messages):
            if m.get("role") != "user":
                if texts:
                    break
                continue
            texts.insert(0, str(m.get("content") or ""))
        return fold(" ".join(texts))

    def intent(self) -> str:
        """What the person is after, from their newest message that says it."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                found = _intent(fold(str(m.get("content") or "")))
                if found:
                    return found
        return ""

    def results(self, tool: str) -> list[dict[str, Any]]:
        """Results of ``tool`` in this request, newest first."""
        names = {}
        out = []
        for m in self.messages:
            for c in m.get("tool_calls") or []:
                names[c["id"]] = c["function"]["name"]
        for m in reversed(self.messages):
            if m.get("role") == "tool" and names.get(m.get("tool_call_id")) == tool:
                try:
                    out.append(json.loads(m.get("content") or "{}"))
                except ValueError:
                    continue
        return out

    def last_tool(self) -> tuple[str, dict[str, Any]]:
        last = self.messages[-1]
        for m in reversed(self.messages):
            for c in m.get("tool_calls") or []:
                if c["id"] == last.get("tool_call_id"):
                    return c["function"]["name"], json.loads(last.get("content") or "{}")
        return "", {}

    def last_assistant(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "assistant" and m.get("content"):
                return fold(str(m["content"]))
        return ""

    def service(self, text: str) -> str:
        for s in self.services:
            if s in text:
                return s
        return self.services[0]

    def when(self, text: str) -> When | None:
        return parse_when(text, self.now)

    # --- answering the person --------------------------------------------------------------------------

    def on_user(self) -> dict[str, Any]:
        text = self.user_text()
        if any(w in text for w in INJECTION):
            return self.comply_naively(text)
        if any(w in text for w in HUMAN):
            return _call("handoff_to_human", reason="a pessoa pediu um atendente")
        intent = _intent(text)
        if intent in ("cancel", "reschedule", "list"):
            return _call("list_appointments")
        if "lista de espera" in self.last_assistant() and text.split(" ")[0] in YES_WORDS:
            found = self.results("find_slots")
            return _call("join_waitlist", service=(found[0].get("service") if found else None) or self.service(text))
        picked = self.pick(text)
        if picked is not None:
            return self.request(picked)
        if any(w in text for w in INFO):
            return _call("business_info")
        when = self.when(text)
        if intent == "book" or when is not None:
            return self.find(text, when, self.intent() == "reschedule")
        if re.fullmatch(r"(oi|ola|bom dia|boa tarde|boa noite)[ !.]*", text):
            return _msg("Olá! Posso agendar, remarcar ou cancelar uma consulta, ou tirar dúvidas. Como posso ajudar?")
        return _msg("Posso ajudar só com o atendimento da clínica: agendar, remarcar ou cancelar consultas.")

    def comply_naively(self, text: str) -> dict[str, Any]:
        """Told to skip the rules, it books a slot nobody offered (the server refuses it)."""
        when = self.when(text) or When(self.now.date() + timedelta(days=1), time(10, 0))
        day = when.day or self.now.date() + timedelta(days=1)
        at = when.at or time(10, 0)
        return _call("request_booking", slot_id=f"ana.{self.service(text)}.{day:%Y%m%d}T{at:%H%M}")

    def find(self, text: str, when: When | None, rescheduling: bool) -> dict[str, Any]:
        service = self.service(text)
        if rescheduling:
            apts = self.results("list_appointments")
            if apts and apts[0].get("appointments"):
                service = apts[0]["appointments"][0]["service"]
        day = when.day.isoformat() if when and when.day else None
        return _call("find_slots", service=service, date_from=day, part_of_day=_part(when))

    def pick(self, text: str) -> dict[str, Any] | None:
        """The slot the person chose among those offered last (by number, ordinal or time)."""
        offered = self.results("find_slots")
        slots = offered[0].get("slots") if offered else None
        if not slots or "horario" not in self.last_assistant():
            return None
        number = re.fullmatch(r"(?:o |a |opcao |numero )?(\d{1,2})", text.strip(" .!"))
        index = int(number.group(1)) if number else next((n for w, n in ORDINALS.items() if w in text), 0)
        if 1 <= index <= len(slots):
            return slots[index - 1]
        when = self.when(text)
        if when is not None and when.at is not None:
            for slot in slots:
                start = datetime.fromisoformat(slot["start"])
                if start.time() == when.at and (when.day is None or start.date() == when.day):
                    return slot
        if len(slots) == 1 and text.split(" ")[0] in YES_WORDS:
            return slots[0]
        return None

    def request(self, slot: dict[str, Any]) -> dict[str, Any]:
        if self.intent() == "reschedule":
            apts = self.results("list_appointments")
            if apts and apts[0].get("appointments"):
                apt = apts[0]["appointments"][0]["appointment_id"]
                return _call("request_reschedule", appointment_id=apt, slot_id=slot["slot_id"])
        return _call("request_booking", slot_id=slot["slot_id"])

    # --- answering a tool result -----------------------------------------------------------------------

    def after_tool(self) -> dict[str, Any]:
        name, result = self.last_tool()
        if "error" in result:
            if "not returned by find_slots" in result["error"] or "not one of this person" in result["error"]:
                return _msg("Não posso fazer isso. Posso buscar horários livres para você, se quiser.")
            return _msg("Não consegui concluir isso agora. Quer que eu procure outros horários?")
        if name == "find_slots":
            slots = result.get("slots") or []
            if not slots:
                return _msg("Não encontrei horários livres nesse período. Quer entrar na lista de espera?")
            lines = [f"{i}) {s['when']} com {s.get('provider_name') or s['provider']}" for i, s in enumerate(slots, 1)]
            return _msg("Tenho estes horários:\n" + "\n".join(lines) + "\nQual você prefere?")
        if name == "list_appointments":
            return self.after_list(result.get("appointments") or [])
        if name == "business_info":
            address = result.get("address") or "nosso endereço"
            return _msg(f"Ficamos em {address}. Atendemos de segunda a sexta, com horário marcado.")
        if name == "join_waitlist":
            return _msg("Pronto, você está na lista de espera. Aviso por aqui quando abrir um horário.")
        return _msg("Certo.")

    def after_list(self, apts: list[dict[str, Any]]) -> dict[str, Any]:
        intent = self.intent()
        if not apts:
            return _msg("Você não tem agendamentos futuros. Quer marcar uma consulta?")
        if intent == "cancel":
            return _call("request_cancel", appointment_id=self.chosen(apts)["appointment_id"])
        if intent == "reschedule":
            text = self.user_text()
            apt = self.chosen(apts)
            when = self.when(text)
            day = when.day.isoformat() if when and when.day else None
            return _call("find_slots", service=apt["service"], date_from=day, part_of_day=_part(when))
        lines = [f"- {a['when']}" for a in apts]
        return _msg("Seus agendamentos:\n" + "\n".join(lines))

    def chosen(self, apts: list[dict[str, Any]]) -> dict[str, Any]:
        return apts[0]


def _part(when: When | None) -> str | None:
    """The part of the day asked for, or the one an asked time falls in (so the list includes it)."""
    if when is None:
        return None
    if when.part_of_day or when.at is None:
        return when.part_of_day
    return "manha" if when.at.hour < 12 else "tarde" if when.at.hour < 18 else "noite"


def _intent(text: str) -> str:
    if any(w in text for w in LIST):
        return "list"
    if any(w in text for w in CANCEL):
        return "cancel"
    if any(w in text for w in RESCHEDULE):
        return "reschedule"
    if any(w in text for w in BOOK):
        return "book"
    return ""
