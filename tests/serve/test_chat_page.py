"""The chat page in a real headless Chromium: `distinfer chat` (its own process, as the demo runs
it) against the real app on the session's Ray Serve (tests/serve/conftest.py: `tiny` on the hf
engine, `syn` and `slow` synthetic), everything over real HTTP on 127.0.0.1.

Checked in the page, as a person sees it: the model picker lists /v1/models; an answer from the
tiny hf model and from the synthetic models appears (from `slow`, a token every 50 ms, it is seen
growing while it streams); switching models changes who answers; max tokens reaches the app (too
many for tiny's 128-token context is the app's 400, shown as a sentence); an overloaded model
(503) and a missing API key (401) are shown as messages, not stack traces; the API key from
--api-key-file is used. Screenshots land in each test's tmp folder.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.keys import Keys

from browser import Browser
from distinfer.serve.local_ray import free_ports

pytestmark = pytest.mark.ray

DISTINFER = str(Path(sys.executable).with_name("distinfer"))
ANSWER_TIMEOUT_S = 90.0


@contextlib.contextmanager
def chat_process(api_url: str, workdir: Path, *extra: str) -> Iterator[str]:
    """`distinfer chat --url api_url` on a free port; yields the page URL once /health answers."""
    (port,) = free_ports(1)
    log_path = workdir / f"chat-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [DISTINFER, "chat", "--url", api_url, "--port", str(port), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    page = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"distinfer chat exited {proc.returncode}: {log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{page}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"chat page not up in 90 s: {log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield page
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ChatScreen:
    """The page's parts, found by the element ids python/distinfer/chat/page.py gives them."""

    def __init__(self, browser: Browser, url: str, shots: Path) -> None:
        self.browser, self.url, self.shots = browser, url, shots

    def load(self) -> str:
        """Open the page; returns the model picked once /v1/models has filled the picker."""
        self.browser.open(self.url)
        return self.browser.wait_for(
            lambda: self.browser.find("#model input").get_attribute("value") or self.notice(),
            60,
            "the model picker filled from /v1/models (or a notice)",
            self.shots / "load-failed.png",
        )

    def options(self) -> list[str]:
        self.browser.find("#model input").click()
        names = self.browser.wait_for(
            lambda: [o.get_attribute("aria-label") for o in self.browser.find_all("[role=option]")],
            10,
            "the picker's options",
        )
        self.browser.find("#question textarea").click()  # close the list
        return names

    def pick(self, model: str) -> None:
        self.browser.find("#model input").click()
        self.browser.wait_for(
            lambda: self.browser.find(f"[role=option][aria-label='{model}']"), 10, model
        ).click()
        self.browser.wait_for(
            lambda: self.browser.find("#model input").get_attribute("value") == model, 10, f"{model} picked"
        )

    def set_max_tokens(self, count: int) -> None:
        box = self.browser.find("#max-tokens input[type=number]")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(count), Keys.TAB)
        # The slider follows once the page has taken the value: only then does a send carry it.
        self.browser.wait_for(
            lambda: self.browser.find("#max-tokens input[type=range]").get_attribute("value") == str(count),
            10,
            f"max tokens set to {count}",
        )

    def ask(self, question: str) -> None:
        self.browser.find("#question textarea").send_keys(question, Keys.ENTER)

    def answers(self) -> list[str]:
        return [e.text.strip() for e in self.browser.find_all("#chat [data-testid='bot']")]

    def questions(self) -> list[str]:
        return [e.text.strip() for e in self.browser.find_all("#chat [data-testid='user']")]

    def notice(self) -> str:
        """The notice's own text (not the progress timer Gradio overlays on it while a request runs)."""
        return str(self.browser.find("#notice [data-testid='markdown']").text.strip())

    def wait_answer(self, count: int, name: str) -> str:
        """The `count`-th answer once it has stopped changing for a second; fails (with a screenshot)
        if it never appears."""
        last = {"text": "", "since": time.monotonic()}

        def settled() -> str | None:
            if notice := self.notice():
                raise AssertionError(f"the page shows an error instead of answer {count} ({name}): {notice}")
            answers = self.answers()
            text = answers[count - 1] if len(answers) >= count else ""
            if text != last["text"]:
                last.update(text=text, since=time.monotonic())
            return text if text and time.monotonic() - float(last["since"]) >= 1.0 else None

        return self.browser.wait_for(
            settled,
            ANSWER_TIMEOUT_S,
            f"answer {count} ({name}) in the page",
            self.shots / f"{name}-missing.png",
        )


@pytest.fixture(scope="module")
def main_page(main_app: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chat_process(main_app, tmp_path_factory.mktemp("chat")) as page:
        yield page


def test_the_tiny_model_answers_in_the_page_and_too_many_tokens_is_a_message(
    main_page: str, browser: Browser, tmp_path: Path
) -> None:
    screen = ChatScreen(browser, main_page, tmp_path)
    assert screen.load() == "tiny"  # the first model of /v1/models is picked
    assert screen.options() == ["tiny", "syn", "slow"]
    screen.set_max_tokens(4096)  # tiny takes 128 tokens of prompt + answer: the app answers 400
    screen.ask("What is Ray Serve?")
    notice = browser.wait_for(screen.notice, 60, "the 400 message", tmp_path / "tiny-400.png")
    assert notice.startswith("Error: The app rejected the request (400): max_tokens=4096"), notice
    assert "ask for at most" in notice and "Traceback" not in browser.find("body").text
    assert screen.answers() == [] and screen.questions() == []
    screen.set_max_tokens(12)
    browser.find("#send").click()  # the question went back to its box after the error
    browser.wait_for(lambda: screen.notice() == "", 30, "the old error cleared as the new request starts")
    answer = screen.wait_answer(1, "tiny")
    assert screen.notice() == ""
    assert screen.questions() == ["What is Ray Serve?"]
    assert answer and not set(answer.split()) <= {"alpha", "beta", "lorem", "ipsum", "dolor", "sit", "amet"}
    browser.screenshot(tmp_path / "chat-tiny.png")


def test_switching_models_changes_who_answers_and_the_answer_streams_in(
    main_page: str, browser: Browser, tmp_path: Path
) -> None:
    screen = ChatScreen(browser, main_page, tmp_path)
    screen.load()
    screen.pick("syn")
    screen.set_max_tokens(16)  # syn's context is 64 tokens
    screen.ask("Say something")
    assert screen.wait_answer(1, "syn") == "alpha beta alpha"  # syn's vocabulary, stopped at 3 tokens
    screen.pick("slow")
    screen.set_max_tokens(40)  # slow: a token every 50 ms, so about 2 s of streaming
    screen.ask("And you?")
    seen: list[str] = []
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline:
        texts = browser.driver.execute_script(
            "return [...document.querySelectorAll(\"#chat [data-testid='bot']\")].map(e => e.innerText)"
        )
        if len(texts) >= 2 and texts[1].strip():
            seen.append(texts[1].strip())
            if len(texts[1].split()) >= 40:
                break
        time.sleep(0.03)
    final = screen.wait_answer(2, "slow")
    assert final.split() == (["lorem", "ipsum", "dolor", "sit", "amet"] * 8), final
    growing = sorted({len(text.split()) for text in seen})
    # Streamed: the page showed the answer part-written several times before it was whole.
    assert len([n for n in growing if n < 40]) >= 3, growing
    assert screen.questions() == ["Say something", "And you?"]
    browser.screenshot(tmp_path / "chat-switch.png")


def _hold(url: str, body: dict[str, Any], release: threading.Event, started: threading.Event) -> None:
    """Keep one streamed request open until `release` (a slot taken, or a place in the queue)."""
    with httpx.Client(timeout=60) as client, client.stream("POST", url, json=body) as response:
        started.set()
        if response.status_code == 200:
            release.wait(60)


def test_an_overloaded_app_shows_the_message_in_the_page(
    main_page: str, main_app: str, browser: Browser, tmp_path: Path
) -> None:
    screen = ChatScreen(browser, main_page, tmp_path)
    screen.load()
    screen.pick("slow")
    # `slow` takes one request and lets one more wait: hold both, so the page's request is refused.
    body = {"model": "slow", "prompt": "x", "max_tokens": 400, "stream": True, "ignore_eos": True}
    release = threading.Event()
    in_flight = threading.Event()
    holders = [threading.Thread(target=_hold, args=(f"{main_app}/v1/completions", body, release, in_flight))]
    holders[0].start()
    assert in_flight.wait(30)
    holders.append(
        threading.Thread(target=_hold, args=(f"{main_app}/v1/completions", body, release, threading.Event()))
    )
    holders[1].start()
    time.sleep(1.0)  # the second one reaches the queue
    try:
        screen.ask("Are you busy?")
        notice = browser.wait_for(
            screen.notice, 30, "the overload message", tmp_path / "overload-missing.png"
        )
        browser.screenshot(tmp_path / "chat-overloaded.png")
    finally:
        release.set()
        for holder in holders:
            holder.join(60)
    assert notice.startswith("Error: The app is overloaded (503): model 'slow' is at capacity"), notice
    assert notice.endswith("Try again in 1 s.")  # Retry-After: 1
    page_text = browser.find("body").text
    assert "Traceback" not in page_text and "Exception" not in page_text
    assert screen.answers() == [] and screen.questions() == []
    assert browser.find("#question textarea").get_attribute("value") == "Are you busy?"  # ready to resend


def test_the_api_key_is_sent_when_one_is_set(
    secured_app: str, ray_serve: Any, browser: Browser, tmp_path: Path
) -> None:
    with chat_process(secured_app, tmp_path) as page:
        screen = ChatScreen(browser, page, tmp_path)
        notice = screen.load()
        assert notice.startswith("Error: The app refused the API key (401)"), notice
        assert "--api-key-file" in notice
    key_file = tmp_path / "api-key"
    key_file.write_text(ray_serve.api_key + "\n")
    with chat_process(secured_app, tmp_path, "--api-key-file", str(key_file)) as page:
        screen = ChatScreen(browser, page, tmp_path)
        assert screen.load() == "syn"
        screen.set_max_tokens(7)
        screen.ask("Hello")
        # This app's syn has the synthetic engine's default words and no end of its own.
        assert screen.wait_answer(1, "syn with key") == "lorem ipsum dolor sit amet lorem ipsum"
        assert screen.notice() == ""
        browser.screenshot(tmp_path / "chat-api-key.png")
