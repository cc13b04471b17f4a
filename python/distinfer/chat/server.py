"""The page on a FastAPI app of its own (with `/health` for readiness checks), run by uvicorn."""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI

from distinfer.chat.client import ApiTarget

log = logging.getLogger(__name__)


def create_chat_app(target: ApiTarget) -> FastAPI:
    # Before gradio is imported: no usage reports to the outside from this page.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from distinfer.chat.page import CSS, THEME, build_page

    app = FastAPI(title="distinfer chat", docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "api": target.v1}

    # ssr_mode off: server-side rendering would need Node.js; the page is rendered in the browser.
    return gr.mount_gradio_app(app, build_page(target), path="/", theme=THEME, css=CSS, ssr_mode=False)


def run_chat(target: ApiTarget, host: str, port: int) -> None:
    import uvicorn

    app = create_chat_app(target)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log.info("chat page at http://%s:%d/ asking %s", shown, port, target.v1)
    uvicorn.run(app, host=host, port=port, log_level="warning")
