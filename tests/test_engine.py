"""The conversation engine without servers: what a person is told for what they type, and the state it leaves."""

from __future__ import annotations

import copy
import json

import pytest

from wsm.conversation.engine import Engine
from wsm.conversation.flow import parse_flow
from wsm.store.turn import Turn

FLOW = {
    "name": "engine-test",
    "start": "menu",
    "vars": {"business": "Shop"},
    "texts": {
        "welcome": "Welcome to {business}.",
        "your_turn": "Your turn.",
        "resumed": "Welcome back.",
        "invalid_option": "Pick a number.",
        "queued": "You are #{position} at {business}, ~{wait_min} min.",
        "position_update": "Now #{position}, ~{wait_min} min.",
        "left_queue": "You left the queue.",
        "goodbye": "Bye.",
        "idle_closed": "Closed for silence.",
    },
    "words": {"leave": ["sair", "exit"], "menu": ["menu", "Início"]},
    "steps": {
        "menu": {
            "say": "How can {business} help?",
            "options": [
                {"key": "1", "label": "Book", "next": "ask_name"},
                {"key": "2", "label": "Opening hours", "next": "hours"},
                {"key": "3", "label": "Falar com atendente", "next": "human"},
            ],
        },
        "ask_name": {"say": "Your name?", "collect": "name", "next": "ask_day"},
        "ask_day": {"say": "Which day, {name}?", "collect": "day", "next": "confirm"},
        "confirm": {
            "say": "{name} on {day}, {nobody} stays. Right?",
            "options": [
                {"key": "1", "label": "Sim", "next": "booked"},
                {"key": "2", "label": "Não, corrigir", "next": "ask_name"},
            ],
        },
        "booked": {"say": "Booked, {name}.", "end": "done"},
        "hours": {"say": "9 to 5.", "end": "done"},
        "human": {"say": "A person will answer.", "end": "handoff"},
    },
}
MENU = "How can Shop help?\n1. Book\n2. Opening hours\n3. Falar com atendente"
WELCOME = "Welcome to Shop."


class Chat:
    """A chat's state as the store keeps it: each turn's fields applied, and the reason of an end recorded."""

    def __init__(self, engine: Engine, **state: str) -> None:
        self.engine = engine
        self.state: dict[str, str] = dict(state)

    def commit(self, turn: Turn) -> Turn:
        self.state.update(turn.state)
        if turn.end:
            self.state["closed_reason"] = turn.end  # as commit_turn.lua does
        return turn

    def say(self, *texts: str) -> Turn:
        return self.commit(self.engine.turn(dict(self.state), list(texts)))

    @property
    def fields(self) -> dict[str, str]:
        return json.loads(self.state.get("fields") or "{}")


@pytest.fixture
def engine() -> Engine:
    return Engine(parse_flow(copy.deepcopy(FLOW)))


@pytest.fixture
def chat(engine: Engine) -> Chat:
    """A chat in conversation, at the menu."""
    c = Chat(engine)
    c.say("oi")
    return c


# --- opening a conversation -------------------------------------------------------------------------------


def test_the_first_message_is_answered_with_the_greeting_and_the_first_step(engine: Engine) -> None:
    c = Chat(engine)
    turn = c.say("Olá")
    assert turn.replies == [WELCOME, MENU]
    assert turn.text == f"{WELCOME}\n\n{MENU}"
    assert turn.end is None
    assert turn.state == {
        "conv": "1", "admitted_from_queue": "0", "closed_reason": "", "step": "menu", "fields": "{}", "booking": "",
    }  # fmt: skip


def test_the_messages_that_open_a_conversation_are_not_read_as_answers(engine: Engine) -> None:
    turn = Chat(engine).say("oi", "1", "Ana")
    assert turn.replies == [WELCOME, MENU]
    assert turn.state["step"] == "menu"


def test_an_option_in_the_first_message_is_not_taken(engine: Engine) -> None:
    turn = Chat(engine).say("3")
    assert turn.replies == [WELCOME, MENU]
    assert turn.end is None


def test_a_person_admitted_from_the_queue_is_told_it_is_their_turn_first(engine: Engine) -> None:
    c = Chat(engine, admitted_from_queue="1", status="active")
    turn = c.say("oi")
    assert turn.replies == ["Your turn.", WELCOME, MENU]
    assert c.state["admitted_from_queue"] == "0"
    assert c.say("oi").replies == ["Pick a number.", MENU]  # told once, not on every turn


def test_a_new_conversation_after_an_end_starts_over(chat: Chat) -> None:
    chat.say("1")
    chat.say("Ana")
    chat.say("exit")
    turn = chat.say("oi")
    assert turn.replies == [WELCOME, MENU]
    assert chat.fields == {}


# --- options ----------------------------------------------------------------------------------------------


def test_an_option_is_chosen_by_its_key(chat: Chat) -> None:
    turn = chat.say("1")
    assert turn.replies == ["Your name?"]
    assert chat.state["step"] == "ask_name"
    assert turn.end is None


@pytest.mark.parametrize("text", ["2", " 2. ", "Opening hours", "OPENING HOURS!", "opening hours?"])
def test_an_option_is_chosen_by_key_or_label_ignoring_case_and_punctuation(chat: Chat, text: str) -> None:
    assert chat.say(text).replies == ["9 to 5."]


@pytest.mark.parametrize("text", ["Falar com atendente", "falar com ATENDENTE!", "Fálar com atendênte."])
def test_an_option_label_matches_ignoring_accents(chat: Chat, text: str) -> None:
    assert chat.say(text).end == "handoff"


def test_a_label_with_an_accent_matches_without_it(chat: Chat) -> None:
    chat.say("1")
    chat.say("Ana")
    chat.say("amanhã")
    turn = chat.say("nao, corrigir!")
    assert turn.replies == ["Your name?"]
    assert chat.state["step"] == "ask_name"


@pytest.mark.parametrize("text", ["9", "book please", "", "1 2"])
def test_an_invalid_option_repeats_the_step(chat: Chat, text: str) -> None:
    turn = chat.say(text)
    assert turn.replies == ["Pick a number.", MENU]
    assert turn.end is None
    assert chat.state["step"] == "menu"
    assert chat.state["conv"] == "1"


def test_an_invalid_option_keeps_what_was_collected(chat: Chat) -> None:
    chat.say("1")
    chat.say("Ana")
    chat.say("sexta")
    turn = chat.say("talvez")
    assert turn.replies == ["Pick a number.", "Ana on sexta, {nobody} stays. Right?\n1. Sim\n2. Não, corrigir"]
    assert chat.fields == {"name": "Ana", "day": "sexta"}


# --- collect ----------------------------------------------------------------------------------------------


def test_collect_stores_the_answer_as_typed_but_trimmed(chat: Chat) -> None:
    chat.say("1")
    turn = chat.say("  José da Silva \n")
    assert turn.replies == ["Which day, José da Silva?"]
    assert chat.fields == {"name": "José da Silva"}
    assert "José" in chat.state["fields"]  # kept readable in Redis, not \u-escaped
    assert chat.state["step"] == "ask_day"


def test_collect_takes_any_text_even_a_number(chat: Chat) -> None:
    chat.say("1")
    chat.say("3")
    assert chat.fields == {"name": "3"}
    assert chat.state["step"] == "ask_day"


def test_answers_are_rendered_into_later_steps(chat: Chat) -> None:
    chat.say("1")
    chat.say("Ana")
    turn = chat.say("15/12")
    assert turn.replies == ["Ana on 15/12, {nobody} stays. Right?\n1. Sim\n2. Não, corrigir"]


def test_correcting_overwrites_the_answer(chat: Chat) -> None:
    chat.say("1")
    chat.say("Ana")
    chat.say("15/12")
    chat.say("2")
    chat.say("Bia")
    chat.say("16/12")
    assert chat.fields == {"name": "Bia", "day": "16/12"}


# --- menu and leave words ---------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["menu", "MENU!", "inicio", "Início."])
def test_the_menu_word_goes_back_to_the_first_step(chat: Chat, word: str) -> None:
    chat.say("1")
    chat.say("Ana")
    turn = chat.say(word)
    assert turn.replies == [MENU]
    assert chat.state["step"] == "menu"
    assert turn.end is None


def test_the_menu_word_is_not_collected_as_an_answer(chat: Chat) -> None:
    chat.say("1")
    chat.say("Menu")
    assert chat.fields == {}
    assert chat.state["step"] == "menu"


@pytest.mark.parametrize("word", ["sair", "Sair!", "SÁIR", "exit."])
def test_the_leave_word_ends_the_conversation(chat: Chat, word: str) -> None:
    chat.say("1")
    chat.say("Ana")
    turn = chat.say(word)
    assert turn.replies == ["Bye."]
    assert turn.end == "left"
    assert turn.state == {"conv": "0", "step": "", "fields": "{}", "booking": ""}
    assert "last_result" not in chat.state  # leaving is not a result


def test_the_leave_word_is_not_collected_as_an_answer(chat: Chat) -> None:
    chat.say("1")
    turn = chat.say("sair")
    assert turn.end == "left"
    assert chat.fields == {}


def test_the_leave_word_in_the_opening_messages_ends_without_a_greeting(engine: Engine) -> None:
    c = Chat(engine)
    turn = c.say("oi", "sair")
    assert turn.replies == ["Bye."]
    assert turn.end == "left"
    assert c.state["conv"] == "0"


def test_a_sentence_with_the_leave_word_in_it_does_not_leave(chat: Chat) -> None:
    turn = chat.say("não quero sair")
    assert turn.end is None
    assert turn.replies == ["Pick a number.", MENU]


# --- ends -------------------------------------------------------------------------------------------------


def test_end_done_keeps_the_answers_as_last_result(chat: Chat) -> None:
    chat.say("1")
    chat.say("Ana")
    chat.say("15/12")
    turn = chat.say("Sim")
    assert turn.replies == ["Booked, Ana."]
    assert turn.end == "done"
    assert json.loads(chat.state["last_result"]) == {"name": "Ana", "day": "15/12"}
    assert (chat.state["conv"], chat.state["step"], chat.state["fields"]) == ("0", "", "{}")


def test_end_done_without_answers_keeps_an_empty_last_result(chat: Chat) -> None:
    turn = chat.say("2")
    assert turn.end == "done"
    assert chat.state["last_result"] == "{}"


def test_end_handoff_keeps_the_answers_as_last_result(chat: Chat) -> None:
    chat.say("1")
    chat.say("Ana")
    chat.say("menu")  # back to the menu keeps what was answered
    turn = chat.say("3")
    assert turn.replies == ["A person will answer."]
    assert turn.end == "handoff"
    assert json.loads(chat.state["last_result"]) == {"name": "Ana"}
    assert (chat.state["conv"], chat.state["step"], chat.state["fields"]) == ("0", "", "{}")


def test_last_result_keeps_accents_readable(chat: Chat) -> None:
    chat.say("1")
    chat.say("Conceição")
    chat.say("amanhã")
    chat.say("1")
    assert chat.state["last_result"] == '{"name": "Conceição", "day": "amanhã"}'


# --- a burst of messages in one turn ----------------------------------------------------------------------


def test_a_burst_is_handled_message_by_message_in_one_turn(chat: Chat) -> None:
    turn = chat.say("1", "Ana", "15/12")
    assert turn.replies == [
        "Your name?",
        "Which day, Ana?",
        "Ana on 15/12, {nobody} stays. Right?\n1. Sim\n2. Não, corrigir",
    ]
    assert (
        turn.text == "Your name?\n\nWhich day, Ana?\n\nAna on 15/12, {nobody} stays. Right?\n1. Sim\n2. Não, corrigir"
    )
    assert chat.state["step"] == "confirm"
    assert chat.fields == {"name": "Ana", "day": "15/12"}
    assert turn.end is None


def test_a_burst_stops_at_the_end_of_the_conversation(chat: Chat) -> None:
    turn = chat.say("2", "1", "Ana")
    assert turn.replies == ["9 to 5."]
    assert turn.end == "done"
    assert chat.state["step"] == ""


def test_a_burst_stops_at_the_leave_word(chat: Chat) -> None:
    turn = chat.say("1", "sair", "Ana")
    assert turn.replies == ["Your name?", "Bye."]
    assert turn.end == "left"
    assert chat.state["fields"] == "{}"


def test_a_burst_with_an_invalid_option_goes_on(chat: Chat) -> None:
    turn = chat.say("x", "1")
    assert turn.replies == ["Pick a number.", MENU, "Your name?"]
    assert chat.state["step"] == "ask_name"


def test_a_whole_booking_in_one_burst(chat: Chat) -> None:
    turn = chat.say("1", "Ana", "15/12", "1")
    assert turn.replies[-1] == "Booked, Ana."
    assert turn.end == "done"
    assert json.loads(chat.state["last_result"]) == {"name": "Ana", "day": "15/12"}


# --- idle close and resume --------------------------------------------------------------------------------


def test_idle_close_tells_the_person_and_keeps_where_they_stopped(engine: Engine) -> None:
    turn = engine.idle_close()
    assert (turn.replies, turn.state, turn.end) == (["Closed for silence."], {"conv": "0"}, "idle")


def test_after_an_idle_close_the_conversation_resumes_where_it_stopped(chat: Chat) -> None:
    chat.say("1")
    chat.say("Ana")
    chat.commit(chat.engine.idle_close())
    assert (chat.state["step"], chat.fields) == ("ask_day", {"name": "Ana"})
    turn = chat.say("oi de novo")
    assert turn.replies == ["Welcome back.", "Which day, Ana?"]
    assert (chat.state["conv"], chat.state["closed_reason"], chat.state["step"]) == ("1", "", "ask_day")
    assert chat.say("15/12").replies == ["Ana on 15/12, {nobody} stays. Right?\n1. Sim\n2. Não, corrigir"]


def test_resuming_from_the_queue_says_both(chat: Chat) -> None:
    chat.say("1")
    chat.commit(chat.engine.idle_close())
    chat.state["admitted_from_queue"] = "1"
    assert chat.say("oi").replies == ["Your turn.", "Welcome back.", "Your name?"]


def test_the_leave_word_after_an_idle_close_ends_it(chat: Chat) -> None:
    chat.say("1")
    chat.commit(chat.engine.idle_close())
    turn = chat.say("sair")
    assert turn.replies == ["Bye."]
    assert turn.end == "left"
    assert chat.say("oi").replies == [WELCOME, MENU]  # nothing left to resume


def test_a_step_no_longer_in_the_flow_is_not_resumed(engine: Engine) -> None:
    c = Chat(engine, conv="0", step="removed", fields='{"name": "Ana"}', closed_reason="idle")
    turn = c.say("oi")
    assert turn.replies == [WELCOME, MENU]
    assert (c.state["step"], c.fields) == ("menu", {})


def test_a_conversation_at_a_step_no_longer_in_the_flow_goes_on_from_the_start(engine: Engine) -> None:
    c = Chat(engine, conv="1", step="removed", fields="{}")
    assert c.say("1").replies == ["Your name?"]


def test_a_turn_does_not_change_the_state_it_was_given(engine: Engine) -> None:
    state = {"conv": "1", "step": "ask_name", "fields": '{"x": "1"}'}
    before = dict(state)
    engine.turn(state, ["Ana"])
    assert state == before


# --- queue texts and rendering ----------------------------------------------------------------------------


def test_leaving_the_queue_resets_the_conversation(engine: Engine) -> None:
    turn = engine.leave_queue()
    assert turn.replies == ["You left the queue."]
    assert turn.state == {"conv": "0", "step": "", "fields": "{}"}
    assert turn.end == "left"


def test_position_texts_carry_the_place_and_the_wait(engine: Engine) -> None:
    assert engine.position_text(True, 3, 12) == "You are #3 at Shop, ~12 min."
    assert engine.position_text(False, 1, 0) == "Now #1, ~0 min."


def test_render_keeps_unknown_keys_as_written(engine: Engine) -> None:
    assert engine.render("{business} {name} {nobody}", {"name": "Ana"}) == "Shop Ana {nobody}"


def test_render_prefers_values_over_answers_over_vars(engine: Engine) -> None:
    template = "{business}/{name}"
    assert engine.render(template) == "Shop/{name}"
    assert engine.render(template, {"business": "answer"}) == "answer/{name}"
    assert engine.render(template, {"business": "answer"}, business="value", name="n") == "value/n"


def test_a_step_before_its_answers_shows_the_placeholders(engine: Engine) -> None:
    c = Chat(engine, conv="1", step="ask_day", fields="{}")
    assert c.say("15/12").replies == ["{name} on 15/12, {nobody} stays. Right?\n1. Sim\n2. Não, corrigir"]
