"""The WAHA simulator's chat page in a real headless Chromium, with the whole system behind it.

Two people chat side by side on the page, as ``make local`` runs it (the simulator is a process of the
system); one attendant slot, so the second waits in line and is served when the first leaves. Chromium
comes from Debian (``make system-deps``, run by ``make test``); Playwright drives it. A screenshot is saved to
``tests/artifacts/browser.png`` for a person to look at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from infra.platform.local import LocalSystem
from tests.conftest import local_config
from tests.programs import require_program

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).parent / "artifacts" / "browser.png"
ANA, BRUNO = "5511977770001", "5511977770002"
REPLY_TIMEOUT_MS = 20_000
ALL_WEBHOOKS_DELIVERED = re.compile(r"webhooks: [1-9]\d* delivered, 0 pending, 0 failed")


@pytest.fixture
def system(tmp_path: Path) -> Iterator[LocalSystem]:
    """The whole system with the WAHA simulator as one of its processes (WAHA_URL unset)."""
    env = {
        **os.environ,
        "WAHA_API_KEY": "browser-api-key",
        "WEBHOOK_HMAC_KEY": "browser-hmac-key",
        "WSM_MAX_ACTIVE": "1",
        "WSM_TICK_S": "0.5",
        "WSM_TYPING_MS_PER_CHAR": "1",
        "WSM_TYPING_MAX_MS": "50",
        "WSM_NOTIFY_MIN_INTERVAL_S": "0",
    }
    for name in ("REDIS_URL", "WAHA_URL"):
        env.pop(name, None)
    local = LocalSystem(local_config(tmp_path, env)).start()
    yield local
    local.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    chromium = require_program("chromium", "apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_chat(page: Page, phone: str) -> Locator:
    page.fill("#phone", phone)
    page.click("#open-chat")
    panel = page.locator(f'[data-chat="{phone}@c.us"]')
    expect(panel).to_be_visible()
    return panel


def say(panel: Locator, text: str) -> None:
    panel.locator(".composer").fill(text)
    panel.locator(".send").click()
    expect(panel.locator(".msg.in").filter(has_text=text).last).to_be_visible()


def expect_reply(panel: Locator, needle: str) -> None:
    expect(panel.locator(".msg.out").filter(has_text=needle)).to_have_count(1, timeout=REPLY_TIMEOUT_MS)


def test_two_people_chat_one_waits_then_is_served(browser: Browser, system: LocalSystem) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(system.waha_url)
    try:
        chat_in_line(page)
    finally:  # a picture of the page, also when something above failed
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
    assert errors == [], "the page logged errors"


def chat_in_line(page: Page) -> None:
    expect(page).to_have_title("WAHA simulator")
    ana, bruno = open_chat(page, ANA), open_chat(page, BRUNO)
    first, second = ana.bounding_box(), bruno.bounding_box()
    assert first and second and first["x"] + first["width"] <= second["x"], "panels should sit side by side"

    say(ana, "oi")
    expect_reply(ana, "Como posso ajudar?")
    say(bruno, "olá, tem horário?")
    expect_reply(bruno, "Você é o 1º da fila")
    expect(bruno.locator(".msg.out").filter(has_text="Como posso ajudar?")).to_have_count(0)

    say(ana, "sair")
    expect_reply(ana, "Atendimento encerrado")
    expect_reply(bruno, "É a sua vez")
    expect(ana.locator(".msg.in")).to_contain_text(["oi", "sair"])
    expect(bruno.locator(".msg.out")).to_have_count(2)
    expect(page.locator("#webhook-stats")).to_have_text(ALL_WEBHOOKS_DELIVERED)
