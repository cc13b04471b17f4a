"""The Gradio page: a model picker filled from `/v1/models`, a chat that streams, the settings, and
a notice line where any failure is written in words (never a stack trace).

Element ids (`#model`, `#question`, `#send`, `#chat`, `#notice`, ...) are stable: the browser
tests find the page's parts by them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr

from distinfer.chat.client import ApiError, ApiTarget, ChatRequest, list_models, stream_chat

log = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 4096
# System fonts only: Gradio's default theme loads its fonts from the web, and the page must work
# on a machine with no way out.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)
CSS = "#notice p { color: #b42318; font-weight: 600; }"

History = list[dict[str, Any]]


def _text(content: Any) -> str:
    """A message's text, whichever shape Gradio hands it back in (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    return ""


class ChatPage:
    """The handlers behind the page, bound to one app."""

    def __init__(self, target: ApiTarget) -> None:
        self.target = target

    def models(self) -> tuple[dict[str, Any], str]:
        """The picker's choices (the current first model selected) and the notice."""
        try:
            names = list_models(self.target)
        except ApiError as err:
            return gr.update(choices=[], value=None), f"**Error:** {err}"
        if not names:
            return gr.update(choices=[], value=None), f"**Error:** {self.target.v1}/models lists no model."
        return gr.update(choices=names, value=names[0]), ""

    def answer(
        self, question: str, history: History | None, model: str | None, temperature: float, max_tokens: float
    ) -> Iterator[tuple[str, History, str]]:
        """Yields (question box, chat, notice) as the answer streams in."""
        history = list(history or [])
        if not question.strip():
            yield question, history, "**Error:** type a question first."
            return
        if not model:
            yield question, history, "**Error:** no model picked; press Refresh models."
            return
        messages = [{"role": m["role"], "content": _text(m.get("content"))} for m in history]
        messages.append({"role": "user", "content": question})
        request = ChatRequest(
            model=model, messages=messages, temperature=temperature, max_tokens=int(max_tokens)
        )
        shown = [*history, {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        yield "", shown, ""
        text = ""
        try:
            for piece in stream_chat(self.target, request):
                text += piece
                shown[-1] = {"role": "assistant", "content": text}
                yield "", shown, ""
        except ApiError as err:
            log.info("chat request to %s failed: %s", model, err)
            if text:  # a partial answer stays in the chat, the error beside it
                yield "", shown, f"**Error:** {err}"
            else:  # nothing came: the question goes back to its box, ready to send again
                yield question, history, f"**Error:** {err}"
            return
        if not text:
            yield "", shown[:-1], f"**Error:** {model} answered with no text; try again or raise max tokens."


def build_page(target: ApiTarget) -> gr.Blocks:
    handlers = ChatPage(target)
    with gr.Blocks(title="distinfer chat", analytics_enabled=False) as page:
        gr.Markdown(f"## distinfer chat\nAsking the app's OpenAI API at `{target.v1}`.")
        with gr.Row():
            model = gr.Dropdown(label="Model", choices=[], elem_id="model", scale=3)
            refresh = gr.Button("Refresh models", elem_id="refresh", scale=1)
        with gr.Row():
            temperature = gr.Slider(
                0.0, 2.0, value=DEFAULT_TEMPERATURE, step=0.05, label="Temperature", elem_id="temperature"
            )
            max_tokens = gr.Slider(
                1,
                MAX_TOKENS_LIMIT,
                value=DEFAULT_MAX_TOKENS,
                step=1,
                label="Max tokens",
                elem_id="max-tokens",
            )
        notice = gr.Markdown("", elem_id="notice")
        chat = gr.Chatbot(label="Conversation", elem_id="chat", height=420)
        question = gr.Textbox(
            label="Your message", elem_id="question", placeholder="Ask something, then Enter"
        )
        with gr.Row():
            send = gr.Button("Send", variant="primary", elem_id="send")
            clear = gr.Button("Clear", elem_id="clear")
        inputs = [question, chat, model, temperature, max_tokens]
        outputs = [question, chat, notice]
        page.load(handlers.models, outputs=[model, notice])
        refresh.click(handlers.models, outputs=[model, notice])
        question.submit(handlers.answer, inputs=inputs, outputs=outputs)
        send.click(handlers.answer, inputs=inputs, outputs=outputs)
        clear.click(lambda: ([], ""), outputs=[chat, notice])
    return page
