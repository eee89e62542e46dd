"""A slow model must not delay other chats: the p99 of flow-only chats, alone and while agent chats wait ~3 s
for every model answer, side by side in one run through ``make local``'s processes.

The model is the Chat Completions stand-in answering after ``--model-delay-s`` (3 s); WAHA is the recording
stand-in. The flow is the shipped agent flow with the menu as its start (option 6 enters the agent), so one
worker serves both kinds of chat. Flow-only chats send "menu" at ``--rate`` messages/s; in the second phase
``--agent-chats`` chats also keep a model call in flight each (a new message as soon as the last is answered).

    .venv/bin/python -m bench.agent_latency [--rate 20] [--seconds 20] [--agent-chats 10] [--model-delay-s 3]
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import click
import requests
import yaml

from bench.bodies import BodyMaker, chat_id
from bench.latency import match, wait_for_replies
from bench.loadgen import open_loop
from bench.recorder import RecorderClient, recorder
from bench.report import percentile
from bench.stack import HMAC_KEY, local_system, log_path
from infra.llm_sim.server import LlmSimulator
from wsm.conversation.flow import FLOWS_DIR

SESSION = "default"


def flow_file(folder: Path) -> Path:
    """The shipped agent flow starting at its menu (option 6 = the agent), instructions by absolute path."""
    data = yaml.safe_load((FLOWS_DIR / "agent.pt-BR.yaml").read_text(encoding="utf-8"))
    data["start"] = "menu"
    for step in data["steps"].values():
        if "agent" in step:
            step["agent"]["instructions"] = str(FLOWS_DIR / step["agent"]["instructions"])
    path = folder / "flow.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def wait(rec: RecorderClient, chat: str, count: int, timeout_s: float) -> int:
    """Block until ``chat`` has ``count`` answered texts at the recorder; how many it has."""
    params = {"chat": chat, "count": count, "timeout_s": timeout_s}
    return int(requests.get(f"{rec.url}/bench/wait", params=params, timeout=timeout_s + 5).json()["count"])


def post(url: str, maker: BodyMaker, chat: str, text: str) -> None:
    _, raw, headers = maker.signed(chat, text)
    requests.post(url, data=raw, headers=headers, timeout=10).raise_for_status()


def flow_phase(url: str, rec: RecorderClient, maker: BodyMaker, group: int, rate: float, seconds: float) -> list:
    chats = [chat_id(group, i) for i in range(20)]
    plan = []
    t0 = time.time() + 0.5
    for j in range(int(rate * seconds)):
        chat = chats[j % len(chats)]
        _, raw, headers = maker.signed(chat, "oi" if j < len(chats) else "menu")
        plan.append((t0 + j / rate, chat, raw, headers))
    sent = open_loop(url, plan)
    replies = wait_for_replies(rec, set(chats), sum(s.ok for s in sent))
    latencies, missing, _ = match(sent, replies)
    return [x * 1000 for x in latencies], missing


def agent_load(
    url: str, rec: RecorderClient, maker: BodyMaker, chats: list[str], stop: threading.Event
) -> tuple[list[float], list[threading.Thread]]:
    """Each agent chat keeps one model call in flight: the next message right after the last answer."""
    waits: list[float] = []

    def one(chat: str) -> None:
        count = 2  # the menu and the agent's "Pode escrever"
        while not stop.is_set():
            started = time.time()
            try:
                post(url, maker, chat, "quero marcar uma consulta amanhã de manhã")
                count += 1
                if wait(rec, chat, count, 30) < count:
                    return
            except requests.RequestException:
                return
            waits.append((time.time() - started) * 1000)

    threads = [threading.Thread(target=one, args=(c,), daemon=True) for c in chats]
    for t in threads:
        t.start()
    return waits, threads


def summary(values: list[float]) -> dict[str, float]:
    return {f"p{p}_ms": round(percentile(values, p), 1) for p in (50, 99)} | {"n": len(values)}


@click.command()
@click.option("--rate", type=float, default=20.0, show_default=True, help="Flow-only messages per second.")
@click.option("--seconds", type=float, default=20.0, show_default=True, help="Length of each phase.")
@click.option("--agent-chats", type=int, default=10, show_default=True)
@click.option("--model-delay-s", type=float, default=3.0, show_default=True)
def main(rate: float, seconds: float, agent_chats: int, model_delay_s: float) -> None:
    maker = BodyMaker(SESSION, HMAC_KEY)
    with (
        tempfile.TemporaryDirectory(prefix="wsm-agent-bench-") as tmp,
        LlmSimulator(delay_s=model_delay_s) as llm,
        recorder(log_path("recorder")) as rec,
    ):
        env = {
            "WSM_FLOW_FILE": str(flow_file(Path(tmp))),
            "LLM_BASE_URL": llm.url,
            "LLM_TIMEOUT_S": "10",
            "WSM_TYPING_MS_PER_CHAR": "0",
            "WSM_MAX_ACTIVE": "1000",
        }
        with local_system(rec.url, **env) as system:
            url = system.webhook_url
            rec.reset(0)
            flow_phase(url, rec, maker, 950, rate, 3)  # warm-up
            alone, missing_alone = flow_phase(url, rec, maker, 951, rate, seconds)
            agents = [chat_id(952, i) for i in range(agent_chats)]
            for chat in agents:  # open each chat and enter the agent step (no model call yet)
                post(url, maker, chat, "oi")
                wait(rec, chat, 1, 10)
                post(url, maker, chat, "6")
                wait(rec, chat, 2, 10)
            stop = threading.Event()
            waits, threads = agent_load(url, rec, maker, agents, stop)
            time.sleep(model_delay_s)  # every agent chat has a call in flight
            busy, missing_busy = flow_phase(url, rec, maker, 953, rate, seconds)
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    a, b = summary(alone), summary(busy)
    report = {
        "flow_only_alone": a | {"missing": missing_alone},
        "flow_only_with_slow_model": b | {"missing": missing_busy},
        "p99_ratio": round(b["p99_ms"] / a["p99_ms"], 2) if a["p99_ms"] else None,
        "agent_turns": summary(waits),
        "model_calls": len(llm.requests),
        "conditions": f"{rate}/s flow-only for {seconds}s per phase, {agent_chats} agent chats, model {model_delay_s}s",
    }
    click.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
