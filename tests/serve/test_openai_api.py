"""The OpenAI API of the Ray Serve app, spoken by the official `openai` client and raw HTTP.

Runs against the session's real local Ray Serve (tests/conftest.py) with three models in one
application: `tiny` (hf engine, random tiny Llama), `syn` (synthetic, stops by itself after 3
tokens) and `slow` (synthetic, one request at a time and one waiting, a token every 50 ms).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from distinfer.serve.fuzz import names_field

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def client(main_app: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{main_app}/v1", api_key="unused", max_retries=0, timeout=60)


def test_lists_every_model(client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == ["slow", "syn", "tiny"]


def test_completion_has_exact_usage(client: openai.OpenAI, tiny_model_dir: Any) -> None:
    from transformers import AutoTokenizer

    prompt = "Tell me a story about a robot"
    answer = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=12, extra_body={"ignore_eos": True}
    )
    expected_prompt_tokens = len(AutoTokenizer.from_pretrained(tiny_model_dir)(prompt)["input_ids"])
    assert answer.model == "tiny"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == expected_prompt_tokens
    assert answer.usage.completion_tokens == 12
    assert answer.usage.total_tokens == expected_prompt_tokens + 12


def test_chat_uses_the_chat_template(client: openai.OpenAI, tiny_model_dir: Any) -> None:
    from transformers import AutoTokenizer

    messages = [{"role": "user", "content": "hello there"}]
    answer = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5)  # type: ignore[arg-type]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    templated = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == len(tokenizer(templated)["input_ids"])
    assert 1 <= answer.usage.completion_tokens <= 5


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_stream_with_usage_chunk(client: openai.OpenAI, api: str) -> None:
    if api == "chat":
        stream: Any = client.chat.completions.create(
            model="syn",
            messages=[{"role": "user", "content": "one two three"}],
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    else:
        stream = client.completions.create(
            model="syn",
            prompt="one two three",
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    chunks = list(stream)
    content = [c for c in chunks if c.choices]
    texts = [c.choices[0].delta.content if api == "chat" else c.choices[0].text for c in content]
    assert len(content) == 10, "one chunk per token"
    assert "".join(texts).split() == ["alpha", "beta"] * 5
    assert content[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 10
    assert chunks[-1].usage.prompt_tokens > 0


def test_stream_without_usage_has_none(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="syn", prompt="x", max_tokens=2, stream=True))
    assert all(c.usage is None for c in chunks)
    assert len(chunks) == 2


def test_two_models_routed_by_name(client: openai.OpenAI) -> None:
    syn = client.completions.create(model="syn", prompt="x", max_tokens=2)
    tiny = client.completions.create(model="tiny", prompt="x", max_tokens=2, extra_body={"ignore_eos": True})
    assert syn.choices[0].text == "alpha beta" and syn.model == "syn"
    assert tiny.model == "tiny" and tiny.choices[0].text != "alpha beta"


def test_ignore_eos_gives_exactly_max_tokens(client: openai.OpenAI) -> None:
    natural = client.completions.create(model="syn", prompt="x", max_tokens=50)
    forced = client.completions.create(
        model="syn", prompt="x", max_tokens=50, extra_body={"ignore_eos": True}
    )
    assert natural.usage is not None and forced.usage is not None
    assert (natural.usage.completion_tokens, natural.choices[0].finish_reason) == (3, "stop")
    assert (forced.usage.completion_tokens, forced.choices[0].finish_reason) == (50, "length")
    tiny = client.completions.create(model="tiny", prompt="x", max_tokens=40, extra_body={"ignore_eos": True})
    assert tiny.usage is not None and tiny.usage.completion_tokens == 40


BAD_REQUESTS: list[tuple[str, str, bytes, int, str]] = [
    ("malformed JSON", "completions", b'{"model": "syn", "prompt": ', 400, "not valid JSON"),
    ("not an object", "completions", b"[1, 2]", 400, "JSON object"),
    ("wrong type", "completions", b'{"model": "syn", "prompt": "x", "max_tokens": "ten"}', 400, "max_tokens"),
    ("missing prompt", "completions", b'{"model": "syn"}', 400, "prompt: Field required"),
    ("missing messages", "chat/completions", b'{"model": "syn"}', 400, "messages: Field required"),
    (
        "negative max_tokens",
        "completions",
        b'{"model": "syn", "prompt": "x", "max_tokens": -1}',
        400,
        "(got -1)",
    ),
    (
        "zero max_tokens",
        "completions",
        b'{"model": "syn", "prompt": "x", "max_tokens": 0}',
        400,
        "max_tokens",
    ),
    (
        "max_tokens past the model limit",
        "completions",
        b'{"model": "tiny", "prompt": "x", "max_tokens": 100000}',
        400,
        "ask for at most",
    ),
    ("unknown field", "completions", b'{"model": "syn", "prompt": "x", "max_token": 5}', 400, "max_token"),
    (
        "bad temperature",
        "chat/completions",
        b'{"model": "syn", "messages": [{"role": "user", "content": "x"}], "temperature": 7}',
        400,
        "temperature",
    ),
    (
        "bad role",
        "chat/completions",
        b'{"model": "syn", "messages": [{"role": "wizard", "content": "x"}]}',
        400,
        "role",
    ),
    (
        "unknown model",
        "completions",
        b'{"model": "gpt-9", "prompt": "x"}',
        404,
        "known models: ['tiny', 'syn'",
    ),
    # What fuzzers built from the schema do not send:
    ("not UTF-8", "completions", b'{"model": "syn", "prompt": "\xff\xfe"}', 400, "not valid JSON"),
    (
        "lone surrogate",
        "completions",
        b'{"model": "syn", "prompt": "a\\ud800b"}',
        400,
        "prompt: holds a lone UTF-16 surrogate",
    ),
    (
        "deeply nested",
        "completions",
        b'{"model": "syn", "prompt": "x", "user": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
        "nested too deeply",
    ),
    (
        "number past the digit limit",
        "completions",
        b'{"model": "syn", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}",
        400,
        "not valid JSON",
    ),
    (
        "huge max_tokens",
        "completions",
        b'{"model": "syn", "prompt": "x", "max_tokens": 1e30}',
        400,
        "max_tokens: Input should be less than or equal to 1000000",
    ),
    # An integer is any integral JSON number (35.0 is one); these are not integers.
    (
        "fractional max_tokens",
        "completions",
        b'{"model": "syn", "prompt": "x", "max_tokens": 3.5}',
        400,
        "max_tokens: Input should be a valid integer (got 3.5)",
    ),
    (
        "boolean max_tokens",
        "completions",
        b'{"model": "syn", "prompt": "x", "max_tokens": true}',
        400,
        "max_tokens: Input should be a valid integer (got True)",
    ),
    (
        "string max_tokens",
        "completions",
        b'{"model": "syn", "prompt": "x", "max_tokens": "3"}',
        400,
        "max_tokens: Input should be a valid integer",
    ),
    # A boolean is true or false: not 0 or 1 (JSON Schema's `boolean`, `const: false`).
    (
        "numeric stream",
        "completions",
        b'{"model": "syn", "prompt": "x", "stream": 1}',
        400,
        "stream: Input should be a valid boolean",
    ),
    (
        "numeric include_usage",
        "completions",
        b'{"model": "syn", "prompt": "x", "stream_options": {"include_usage": 0}}',
        400,
        "stream_options.include_usage: Input should be a valid boolean",
    ),
    ("numeric echo", "completions", b'{"model": "syn", "prompt": "x", "echo": 0}', 422, "echo=0 is not"),
    # max_tokens past the context, on each engine of the app (vLLM: tests/serve/test_vllm_engine.py).
    (
        "max_tokens past the synthetic context",
        "completions",
        b'{"model": "syn", "prompt": "x", "max_tokens": 65}',
        400,
        "max_tokens=65 is past the 64-token limit of model 'syn'",
    ),
    (
        "max_tokens past the hf context",
        "chat/completions",
        b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 129}',
        400,
        "max_tokens=129 is past the 128-token limit of model 'tiny'",
    ),
    (
        "max_completion_tokens past the context",
        "chat/completions",
        b'{"model": "syn", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 99}',
        400,
        "max_completion_tokens=99 is past the 64-token limit",
    ),
    ("n > 1", "completions", b'{"model": "syn", "prompt": "x", "n": 2}', 422, "n=2 is not supported"),
    (
        "logprobs",
        "chat/completions",
        b'{"model": "syn", "messages": [{"role": "user", "content": "x"}], "logprobs": true}',
        422,
        "logprobs=True is not supported by this server",
    ),
    (
        "tools",
        "chat/completions",
        b'{"model": "syn", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}',
        422,
        "tool calling is not implemented",
    ),
    (
        "response_format",
        "chat/completions",
        b'{"model": "syn", "messages": [{"role": "user", "content": "x"}], '
        b'"response_format": {"type": "json_object"}}',
        422,
        "structured output is not implemented",
    ),
    (
        "presence_penalty",
        "completions",
        b'{"model": "syn", "prompt": "x", "presence_penalty": 0.5}',
        422,
        "penalties are not implemented",
    ),
    (
        "echo",
        "completions",
        b'{"model": "syn", "prompt": "x", "echo": true}',
        422,
        "echo=True is not supported",
    ),
    (
        "five stop words",
        "completions",
        b'{"model": "syn", "prompt": "x", "stop": ["a","b","c","d","e"]}',
        400,
        "stop",
    ),
]


@pytest.mark.parametrize(
    ("case", "path", "body", "status", "needle"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(
    main_app: str, case: str, path: str, body: bytes, status: int, needle: str
) -> None:
    answer = httpx.post(f"{main_app}/v1/{path}", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert needle in error["message"], error
    assert error["type"]
    assert error["param"] and names_field(error["message"], error["param"]), error  # the field is named
    if status == 422:
        assert error["code"] == "unsupported_parameter"
    ok = httpx.post(f"{main_app}/v1/completions", json={"model": "syn", "prompt": "x", "max_tokens": 1})
    assert ok.status_code == 200


def test_a_huge_max_tokens_is_refused_at_once_on_a_model_without_a_configured_context(main_app: str) -> None:
    """`slow` sets no max_model_len: the synthetic engine's default context (8192) bounds max_tokens, so
    a non-streamed chat asking a million tokens is a 400 at once, not a slot held for 14 hours."""
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1_000_000}
    started = time.monotonic()
    answer = httpx.post(f"{main_app}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    assert time.monotonic() - started < 5
    error = answer.json()["error"]
    assert error["param"] == "max_tokens" and "8192-token limit" in error["message"], error


def test_prompt_and_completion_share_the_context_as_in_vllm(main_app: str) -> None:
    """max_tokens up to the context is valid; the answer stops where prompt + completion fill it."""
    body = {"model": "syn", "prompt": "one two three", "max_tokens": 64, "ignore_eos": True}
    answer = httpx.post(f"{main_app}/v1/completions", json=body, timeout=30).json()
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 61, "total_tokens": 64}
    assert answer["choices"][0]["finish_reason"] == "length"
    body = {"model": "tiny", "prompt": "x", "max_tokens": 128, "ignore_eos": True}
    answer = httpx.post(f"{main_app}/v1/completions", json=body, timeout=60).json()
    assert answer["usage"]["total_tokens"] == 128 and answer["choices"][0]["finish_reason"] == "length"


def test_integral_numbers_are_integers(main_app: str) -> None:
    """JSON Schema's integer: 3.0 is one, wherever an integer field is."""
    body = {"model": "syn", "prompt": "x", "max_tokens": 3.0, "seed": 7.0, "n": 1.0, "ignore_eos": True}
    answer = httpx.post(f"{main_app}/v1/completions", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 3
    chat = {"model": "syn", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 2.0,
            "ignore_eos": True}  # fmt: skip
    answer = httpx.post(f"{main_app}/v1/chat/completions", json=chat, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 2


def test_an_empty_prompt_is_a_prompt(client: openai.OpenAI) -> None:
    """As OpenAI: the completion starts from the model's beginning of text (the tiny Llama's BOS)."""
    tiny = client.completions.create(model="tiny", prompt="", max_tokens=3, extra_body={"ignore_eos": True})
    assert tiny.usage is not None and (tiny.usage.prompt_tokens, tiny.usage.completion_tokens) == (1, 3)
    syn = client.completions.create(model="syn", prompt="", max_tokens=2)
    assert syn.usage is not None and syn.usage.prompt_tokens == 0 and syn.choices[0].text


def test_neutral_values_of_unsupported_fields_are_accepted(main_app: str) -> None:
    body = {"model": "syn", "prompt": "x", "max_tokens": 2, "n": 1, "logprobs": None, "echo": False,
            "presence_penalty": 0, "tools": None, "response_format": None}  # fmt: skip
    answer = httpx.post(f"{main_app}/v1/completions", json=body)
    assert answer.status_code == 200, answer.text
    chat = {"model": "syn", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2,
            "logprobs": False, "tool_choice": "none", "response_format": {"type": "text"}}  # fmt: skip
    assert httpx.post(f"{main_app}/v1/chat/completions", json=chat).status_code == 200


def test_wrong_content_type_is_415(main_app: str) -> None:
    body = b'{"model": "syn", "prompt": "x", "max_tokens": 1}'
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        answer = httpx.post(f"{main_app}/v1/completions", content=body, headers={"content-type": kind})
        assert answer.status_code == 415, (kind, answer.text)
        assert "application/json" in answer.json()["error"]["message"]
    # No Content-Type at all is taken as JSON (as curl -d users and OpenAI's API expect).
    assert httpx.post(f"{main_app}/v1/completions", content=body).status_code == 200


def test_a_body_over_the_limit_is_413_before_it_reaches_an_engine(main_app: str) -> None:
    from distinfer.serve.protocol import MAX_BODY_BYTES

    prompt = "word " * (MAX_BODY_BYTES // 5 + 10)
    answer = httpx.post(f"{main_app}/v1/completions", json={"model": "tiny", "prompt": prompt}, timeout=60)
    assert answer.status_code == 413, answer.text[:300]
    error = answer.json()["error"]
    assert f"over {MAX_BODY_BYTES} bytes" in error["message"] and error["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is counted as the body arrives
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"w" * 65536
        yield b'"}'

    answer = httpx.post(f"{main_app}/v1/completions", content=chunked(), timeout=60)
    assert answer.status_code == 413, answer.text[:300]
    # A declared length over the limit is refused from the headers: the body is never read.
    host, port = main_app.split("//")[1].split("/")[0].split(":")
    path = "/" + main_app.split("//")[1].split("/", 1)[1] + "/v1/completions"
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {100 * MAX_BODY_BYTES}\r\n\r\n".encode() + b'{"model": ')
        assert sock.recv(200).startswith(b"HTTP/1.1 413"), "waited for a body it should refuse unread"
    ok = httpx.post(f"{main_app}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 1})
    assert ok.status_code == 200


def test_prompt_longer_than_the_model_takes(client: openai.OpenAI) -> None:
    long_prompt = " ".join(["robot"] * 400)  # > 128 tokens of the tiny model
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt=long_prompt, max_tokens=5)
    assert "shorten the prompt" in str(caught.value)
    assert caught.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": long_prompt}])
    assert client.completions.create(model="tiny", prompt="x", max_tokens=1).usage is not None


def test_unknown_model_via_client_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="nope", prompt="x")
    assert "syn" in str(caught.value)


def _read_chunks(lines: Iterator[str], count: int) -> list[dict[str, Any]]:
    """Read `count` SSE chunks from an open stream's line iterator, leaving the stream open.

    The caller keeps `lines` alive: an abandoned httpx line iterator is garbage-collected at once,
    and closing it closes the connection, which is a client disconnect.
    """
    chunks = []
    for line in lines:
        if line.startswith("data: {"):
            chunks.append(json.loads(line[6:]))
            if len(chunks) == count:
                break
    return chunks


def test_overload_is_503_at_once_and_a_disconnect_frees_the_slot(main_app: str) -> None:
    # `slow` takes 1 request in flight and lets 1 more wait (Ray Serve needs a queue bound >= 1).
    body = {"model": "slow", "prompt": "x", "max_tokens": 400, "stream": True, "ignore_eos": True}
    quick = {"model": "slow", "prompt": "x", "max_tokens": 2}
    url = f"{main_app}/v1/completions"
    with (
        ThreadPoolExecutor(1) as pool,
        httpx.Client(timeout=30) as holder,
        holder.stream("POST", url, json=body) as held,
    ):
        assert held.status_code == 200
        lines = held.iter_lines()
        assert len(_read_chunks(lines, 2)) == 2  # the only slot is now taken for ~20 s
        queued = pool.submit(httpx.post, url, json=quick, timeout=30)
        time.sleep(1.0)  # let it reach the ingress's queue
        assert not queued.done(), f"the second request should wait for the slot: {queued.result().text}"
        started = time.monotonic()
        refused = httpx.post(url, json=quick, timeout=30)
        refused_after = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.headers.get("retry-after", "").isdigit()
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused_after < 2.0, f"503 took {refused_after:.2f}s"
        held.close()  # the client hangs up mid-stream
        del lines
        # The engine must abort and free the slot well before the 20 s the stream would have run:
        # the queued request then gets it and finishes.
        answer = queued.result(timeout=10)
    assert answer.status_code == 200, f"slot not freed after the client left: {answer.text}"


def test_api_key_is_enforced_when_configured(secured_app: str, ray_serve: Any) -> None:
    body = {"model": "syn", "prompt": "x", "max_tokens": 1}
    missing = httpx.post(f"{secured_app}/v1/completions", json=body)
    wrong = httpx.post(f"{secured_app}/v1/completions", json=body, headers={"Authorization": "Bearer nope"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{secured_app}/v1", api_key="wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=f"{secured_app}/v1", api_key=ray_serve.api_key, max_retries=0)
    assert good.completions.create(**body).usage is not None  # type: ignore[call-overload]
    assert httpx.get(f"{secured_app}/health").status_code == 200  # probes need no key
