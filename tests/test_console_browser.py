"""The console in a real headless Chromium beside the WAHA simulator's chat page, the whole system behind them.

An operator logs in and goes online; two people ask for a human in the simulator and are told their places;
the console's queue shows both without a reload; the operator takes the first and replies, the person receives
it, the second is told they moved up; "devolver ao bot" and the bot answers the next message; the page keeps
updating after its live stream reconnected. ``/metrics`` refuses without the token and its human-queue and
operator figures move along. Screenshots go to ``tests/artifacts/console*.png``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from infra.platform.local import LocalSystem
from tests import booking_helpers
from tests.conftest import local_config
from tests.test_browser import browser, expect_reply, open_chat, say  # noqa: F401 (the browser fixture)
from wsm.attendance.operators import Operators
from wsm.attendance.ownership import Ownership
from wsm.core.settings import Settings
from wsm.store.connection import get_redis
from wsm.store.scripts import Scripts

pytestmark = pytest.mark.slow
ANA, BRUNO = "5511977770011", "5511977770012"
TOKEN = "browser-metrics-token"
ARTIFACTS = Path(__file__).parent / "artifacts"
TIMEOUT_MS = 20_000


@pytest.fixture
def system(tmp_path: Path) -> Iterator[LocalSystem]:
    env = {
        **os.environ,
        "WAHA_API_KEY": "console-api-key",
        "WEBHOOK_HMAC_KEY": "console-hmac-key",
        "WSM_MAX_ACTIVE": "3",
        "WSM_TICK_S": "0.5",
        "WSM_TYPING_MS_PER_CHAR": "1",
        "WSM_TYPING_MAX_MS": "50",
        "WSM_NOTIFY_MIN_INTERVAL_S": "0",
        "WSM_CONSOLE_SSE_S": "3",  # short streams: the page reconnects (with Last-Event-ID) during the test
        "WSM_CONSOLE_SECRET": "console-browser-secret",
        "WSM_METRICS_TOKEN": TOKEN,
        "WSM_SCHEDULE_FILE": str(booking_helpers.write(tmp_path / "schedule.yaml")),  # always open
    }
    for name in ("REDIS_URL", "WAHA_URL"):
        env.pop(name, None)
    local = LocalSystem(local_config(tmp_path, env)).start()
    yield local
    local.stop()


def metric(system: LocalSystem, name: str, labels: str = "") -> float:
    text = requests.get(system.console_url + "metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert found, f"{name}{labels} not in /metrics"
    return float(found.group(1))


def expect_metric(system: LocalSystem, name: str, value: float, labels: str = "") -> None:
    deadline = time.monotonic() + 20
    while metric(system, name, labels) != value:
        assert time.monotonic() < deadline, f"{name}{labels} stayed {metric(system, name, labels)}, wanted {value}"
        time.sleep(0.2)


def log_in(page: Page, system: LocalSystem, name: str, password: str) -> None:
    page.goto(system.console_url)
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/queues$"))


def test_an_operator_attends_two_people_live(browser: Browser, system: LocalSystem) -> None:  # noqa: F811
    client = get_redis(system.redis_url)
    password = Operators(client).add("ana")
    assert requests.get(system.console_url + "metrics", timeout=10).status_code == 401

    console = browser.new_page(viewport={"width": 390, "height": 844})  # a phone's screen
    chats = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    for page in (console, chats):
        page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        attend(console, chats, system, password)
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        console.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
        chats.screenshot(path=str(ARTIFACTS / "console-chats.png"))
    assert errors == [], "a page raised errors"


def attend(console: Page, chats: Page, system: LocalSystem, password: str) -> None:
    log_in(console, system, "ana", password)
    console.goto(system.console_url + "operators")
    console.fill("#capacity", "1")
    console.click("#go-online button")
    expect(console.locator("#operators tr.online")).to_have_count(1)

    console.goto(system.console_url + "queues")
    expect(console.locator("body")).to_have_attribute("data-live-opens", re.compile(r"\d+"))
    console.evaluate("window.notReloaded = true")

    chats.goto(system.waha_url)
    ana, bruno = open_chat(chats, ANA), open_chat(chats, BRUNO)
    for panel in (ana, bruno):
        say(panel, "oi")
        expect_reply(panel, "Como posso ajudar?")
        say(panel, "3")
    expect_reply(ana, "Você é o 1º na fila para falar com um atendente")
    expect_reply(bruno, "Você é o 2º na fila para falar com um atendente")

    rows = console.locator("#human-queue tr[data-chat]")
    expect(rows).to_have_count(2, timeout=TIMEOUT_MS)  # live: no reload
    expect(rows.first).to_have_attribute("data-chat", f"{ANA}@c.us")
    assert console.evaluate("window.notReloaded") is True
    expect_metric(system, "wsm_queue_length", 2, '{queue="human"}')
    expect_metric(system, "wsm_operators_online", 1)
    assert metric(system, "wsm_queue_oldest_enqueued_timestamp_seconds", '{queue="human"}') > 0

    console.click("#take-next")
    expect(console).to_have_url(re.compile(r"/chat\?"))
    expect(console.locator("#owner")).to_have_attribute("data-owner", "with_operator")
    console.fill("#reply-text", "Olá, aqui é a Ana da recepção. Em que posso ajudar?")
    console.click("#send-reply")
    expect_reply(ana, "aqui é a Ana da recepção")
    expect_reply(bruno, "agora você é o 1º na fila do atendimento humano")
    expect_metric(system, "wsm_queue_length", 1, '{queue="human"}')
    expect(console.locator("#history .msg.in").filter(has_text="3")).not_to_have_count(0)

    say(ana, "quero remarcar, mas prefiro o menu")
    expect(console.locator("#history .msg.in").filter(has_text="prefiro o menu")).to_have_count(1, timeout=TIMEOUT_MS)
    console.select_option("#return-step", "menu")
    console.click("#return-to-bot")
    expect(console.locator("#owner")).to_have_attribute("data-owner", "bot")
    expect(ana.locator(".msg.out").filter(has_text="Como posso ajudar?")).to_have_count(2, timeout=TIMEOUT_MS)
    say(ana, "2")
    expect_reply(ana, "Funcionamos de segunda a sexta")

    console.goto(system.console_url + "queues")
    expect(console.locator("#human-queue tr[data-chat]")).to_have_count(1)
    opens = int(console.locator("body").get_attribute("data-live-opens") or 0)
    expect(console.locator("body")).not_to_have_attribute("data-live-opens", str(opens), timeout=TIMEOUT_MS)
    settings = Settings.from_env()
    client = get_redis(system.redis_url)
    Ownership(client, Scripts(client), settings).close("default", f"{BRUNO}@c.us", "supervisor")  # after a reconnect
    expect(console.locator("#human-queue tr[data-chat]")).to_have_count(0, timeout=TIMEOUT_MS)
    expect_metric(system, "wsm_queue_length", 0, '{queue="human"}')
    assert metric(system, "wsm_queue_oldest_enqueued_timestamp_seconds", '{queue="human"}') == 0
