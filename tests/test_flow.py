"""The flow validator: every mistake in a flow file is named in one clear error; a good file loads as written."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from wsm.conversation.flow import FLOWS_DIR, REQUIRED_TEXTS, FlowError, load_flow, normalize, parse_flow

TEXTS = {name: f"text of {name}" for name in REQUIRED_TEXTS}


def valid() -> dict[str, Any]:
    """The smallest flow that uses every kind of step."""
    return {
        "name": "tiny",
        "start": "menu",
        "vars": {"business": "Shop"},
        "texts": dict(TEXTS),
        "steps": {
            "menu": {"say": "Hi", "options": [{"key": "1", "label": "Name", "next": "ask"}]},
            "ask": {"say": "Your name?", "collect": "name", "next": "bye"},
            "bye": {"say": "Bye {name}", "end": "done"},
        },
    }


def problems(data: Any) -> str:
    with pytest.raises(FlowError) as e:
        parse_flow(data)
    return str(e.value)


def test_a_valid_flow_loads_as_written() -> None:
    flow = parse_flow(valid())
    assert (flow.name, flow.start, flow.vars) == ("tiny", "menu", {"business": "Shop"})
    assert flow.texts == TEXTS
    assert list(flow.steps) == ["menu", "ask", "bye"]
    menu, ask, bye = flow.steps.values()
    assert [(o.key, o.label, o.next) for o in menu.options] == [("1", "Name", "ask")]
    assert (ask.collect, ask.next, ask.end) == ("name", "bye", None)
    assert (bye.say, bye.end, bye.options) == ("Bye {name}", "done", ())


def test_without_words_the_default_leave_and_menu_words_apply() -> None:
    flow = parse_flow(valid())
    assert flow.leave_words == {"sair", "encerrar", "exit", "quit"}
    assert flow.menu_words == {"menu"}


def test_words_of_the_file_are_normalized() -> None:
    data = valid()
    data["words"] = {"leave": ["Tchau!", "ADIÓS"], "menu": ["Início"]}
    flow = parse_flow(data)
    assert flow.leave_words == {"tchau", "adios"}
    assert flow.menu_words == {"inicio"}


@pytest.mark.parametrize("data", [None, "steps: []", ["start", "menu"], 3])
def test_a_flow_that_is_not_a_mapping_is_refused(data: Any) -> None:
    assert problems(data) == "a flow must be a mapping with 'start', 'texts' and 'steps'"


@pytest.mark.parametrize("steps", [None, {}, [], ["menu"], "menu"])
def test_steps_must_be_a_non_empty_mapping(steps: Any) -> None:
    data = valid()
    data["steps"] = steps
    assert problems(data) == "'steps' must be a non-empty mapping of step name to step"


def test_missing_steps_are_refused() -> None:
    data = valid()
    del data["steps"]
    assert problems(data) == "'steps' must be a non-empty mapping of step name to step"


def test_start_must_name_a_step() -> None:
    data = valid()
    data["start"] = "nope"
    assert problems(data) == "invalid flow: 'start' must name a step, got 'nope'"
    del data["start"]
    assert problems(data) == "invalid flow: 'start' must name a step, got None"


def test_an_option_to_an_unknown_step_is_named() -> None:
    data = valid()
    data["steps"]["menu"]["options"].append({"key": "2", "label": "Lost", "next": "nowhere"})
    assert problems(data) == "invalid flow: step 'menu' goes to unknown step 'nowhere'"


def test_an_option_without_next_is_an_unknown_step() -> None:
    data = valid()
    del data["steps"]["menu"]["options"][0]["next"]
    assert problems(data) == "invalid flow: step 'menu' goes to unknown step 'None'"


def test_a_collect_to_an_unknown_step_is_named() -> None:
    data = valid()
    data["steps"]["ask"]["next"] = "later"
    assert problems(data) == "invalid flow: step 'ask' goes to unknown step 'later'"


def test_a_missing_text_is_named() -> None:
    data = valid()
    del data["texts"]["goodbye"]
    assert problems(data) == "invalid flow: texts.goodbye is missing"


def test_without_texts_every_required_text_is_named() -> None:
    data = valid()
    del data["texts"]
    message = problems(data)
    assert message == "invalid flow: " + "; ".join(f"texts.{name} is missing" for name in REQUIRED_TEXTS)
    assert len(REQUIRED_TEXTS) == 9


@pytest.mark.parametrize("raw", [None, "Hi", ["Hi"], {"options": []}, {"say": 3, "end": "done"}])
def test_a_step_must_be_a_mapping_with_a_say_text(raw: Any) -> None:
    data = valid()
    data["steps"]["bye"] = raw
    assert problems(data) == "invalid flow: step 'bye' must be a mapping with a 'say' text"


def test_a_step_of_no_kind_is_refused() -> None:
    data = valid()
    data["steps"]["bye"] = {"say": "Bye"}
    assert problems(data) == (
        "invalid flow: step 'bye' needs exactly one of 'options', 'collect' (with 'next'), "
        "'end', 'schedule' (with 'next') or 'agent'"
    )


@pytest.mark.parametrize(
    "extra",
    [{"end": "done"}, {"collect": "x", "next": "bye"}],
    ids=["options+end", "options+collect"],
)
def test_a_step_of_two_kinds_is_refused(extra: dict[str, str]) -> None:
    data = valid()
    data["steps"]["menu"].update(extra)
    assert problems(data) == (
        "invalid flow: step 'menu' needs exactly one of 'options', 'collect' (with 'next'), "
        "'end', 'schedule' (with 'next') or 'agent'"
    )


def test_collect_and_end_in_one_step_is_refused() -> None:
    data = valid()
    data["steps"]["ask"]["end"] = "done"
    assert problems(data) == (
        "invalid flow: step 'ask' needs exactly one of 'options', 'collect' (with 'next'), "
        "'end', 'schedule' (with 'next') or 'agent'"
    )


def test_empty_options_count_as_no_kind() -> None:
    data = valid()
    data["steps"]["bye"] = {"say": "Bye", "options": []}
    assert "step 'bye' needs exactly one of" in problems(data)


def test_collect_without_next_is_refused() -> None:
    data = valid()
    del data["steps"]["ask"]["next"]
    assert problems(data) == "invalid flow: step 'ask' collects 'name' but has no 'next'"


@pytest.mark.parametrize("kind", ["finished", "Done", "left"])
def test_end_must_be_done_or_handoff(kind: str) -> None:
    data = valid()
    data["steps"]["bye"]["end"] = kind
    assert problems(data) == "invalid flow: step 'bye': 'end' must be one of done, handoff"


def test_handoff_is_a_valid_end() -> None:
    data = valid()
    data["steps"]["bye"]["end"] = "handoff"
    assert parse_flow(data).steps["bye"].end == "handoff"


def test_every_problem_is_named_at_once() -> None:
    data = valid()
    data["start"] = "nope"
    data["steps"]["menu"]["options"][0]["next"] = "nowhere"
    del data["steps"]["ask"]["next"]
    data["steps"]["bye"]["end"] = "finished"
    del data["texts"]["welcome"]
    message = problems(data)
    assert message.startswith("invalid flow: ")
    assert message.removeprefix("invalid flow: ").split("; ") == [
        "step 'ask' collects 'name' but has no 'next'",
        "step 'bye': 'end' must be one of done, handoff",
        "'start' must name a step, got 'nope'",
        "step 'menu' goes to unknown step 'nowhere'",
        "texts.welcome is missing",
    ]


def test_a_refused_flow_does_not_change_what_it_was_given() -> None:
    data = valid()
    data["steps"]["bye"]["end"] = "finished"
    before = copy.deepcopy(data)
    problems(data)
    assert data == before


# --- files ------------------------------------------------------------------------------------------------


def test_load_flow_reads_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(valid(), allow_unicode=True), encoding="utf-8")
    assert load_flow(path) == parse_flow(valid())
    assert load_flow(str(path)).name == "tiny"


def test_load_flow_reads_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(valid()), encoding="utf-8")
    assert load_flow(path) == parse_flow(valid())


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(FlowError, match=r"^cannot read flow file .*absent\.yaml: .*No such file"):
        load_flow(path)


def test_a_folder_is_not_a_flow_file(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match=r"^cannot read flow file "):
        load_flow(tmp_path)


def test_a_file_that_is_not_yaml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("start: menu\nsteps: {menu: [unclosed\n", encoding="utf-8")
    with pytest.raises(FlowError, match=r"^cannot read flow file .*broken\.yaml: "):
        load_flow(path)


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: atenção\n".encode("latin-1"))
    with pytest.raises(FlowError, match=r"^cannot read flow file .*latin1\.yaml: "):
        load_flow(path)


def test_an_empty_file_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(FlowError, match=r"^a flow must be a mapping"):
        load_flow(path)


def test_an_invalid_file_names_its_problems(tmp_path: Path) -> None:
    data = valid()
    data["steps"]["bye"]["end"] = "finished"
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(FlowError, match=r"^invalid flow: step 'bye': 'end' must be one of done, handoff$"):
        load_flow(path)


@pytest.mark.parametrize("path", [None, ""])
def test_without_a_path_the_shipped_flow_loads(path: str | None) -> None:
    flow = load_flow(path)
    assert flow.name == "atendimento-padrao"
    assert flow.start == "menu"
    assert {s.end for s in flow.steps.values()} == {None, "done", "handoff"}
    assert set(REQUIRED_TEXTS) <= flow.texts.keys()


# --- normalize --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sair", "sair"),
        ("SAIR", "sair"),
        ("  Sáir!  ", "sair"),
        ("Encerrar.", "encerrar"),
        ("menu?!", "menu"),
        ("Atenção", "atencao"),
        ("Não, corrigir", "nao, corrigir"),  # only the ends are trimmed of punctuation
        ("1.", "1"),
        ("", ""),
        ("!!!", ""),
        ("ｓａｉｒ", "sair"),  # full-width letters, as some keyboards send them
    ],
)
def test_normalize_ignores_case_accents_and_trailing_punctuation(text: str, expected: str) -> None:
    assert normalize(text) == expected


# --- sections of the wrong shape and texts the engine could not render --------------------------------


@pytest.mark.parametrize("section", ["texts", "vars", "words"])
def test_a_section_that_is_not_a_mapping_is_a_flow_error(section: str) -> None:
    data = valid()
    data[section] = ["a", "list"]
    assert f"'{section}' must be a mapping, got list" in problems(data)


def test_one_word_alone_is_one_word_not_its_letters() -> None:
    data = valid()
    data["words"] = {"leave": "sair", "menu": ["menu", "início"]}
    flow = parse_flow(data)
    assert flow.leave_words == {"sair"}
    assert flow.menu_words == {"menu", "inicio"}


def test_a_word_list_of_other_things_is_refused() -> None:
    data = valid()
    data["words"] = {"leave": [1, 2]}
    assert "words.leave must be a list of words" in problems(data)


@pytest.mark.parametrize("text", ["Olá {", "Olá }", "Olá {}", "Olá {0}", "Olá {a.b}"])
def test_a_text_the_engine_could_not_render_is_refused_at_start(text: str) -> None:
    data = valid()
    data["texts"] = {**TEXTS, "goodbye": text}
    assert "texts.goodbye:" in problems(data)
    data = valid()
    data["steps"]["bye"]["say"] = text
    assert "step 'bye':" in problems(data)


def test_literal_braces_are_written_doubled() -> None:
    data = valid()
    data["texts"] = {**TEXTS, "goodbye": "Até logo {{:-)}}"}
    assert parse_flow(data).texts["goodbye"] == "Até logo {{:-)}}"


def test_an_agent_step_reads_its_instructions_and_checks_its_fields(tmp_path: Path) -> None:
    (tmp_path / "prompt.md").write_text("Seja breve.", encoding="utf-8")
    data = valid()
    data["steps"]["chat"] = {"agent": {"instructions": "prompt.md", "fallback": "menu"}}
    flow = parse_flow(data, tmp_path)
    assert flow.steps["chat"].agent.instructions == "Seja breve." and flow.uses_agent
    data["steps"]["chat"] = {"agent": {"instructions": "missing.md", "fallback": "nowhere", "model": "x"}}
    with pytest.raises(FlowError) as e:
        parse_flow(data, tmp_path)
    assert "cannot read the agent's instructions" in str(e.value) and "unknown agent field(s) model" in str(e.value)
    data["steps"]["chat"] = {"agent": {"instructions": "prompt.md", "fallback": "nowhere"}}
    with pytest.raises(FlowError, match="goes to unknown step 'nowhere'"):
        parse_flow(data, tmp_path)


def test_the_shipped_agent_flow_loads() -> None:
    flow = load_flow(FLOWS_DIR / "agent.pt-BR.yaml")
    assert flow.start == "assistente" and flow.steps["assistente"].agent.fallback == "menu"
