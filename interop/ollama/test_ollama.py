"""The official `ollama` Python client against the examples' `POST /api/chat`, and a JSON Lines
reader nobody here wrote (`jsonlines`) against `POST /stream/{ndjson,jsonl}`."""

import re

import httpx
import jsonlines
import ollama
import pytest

# Characters some client or encoder gets wrong: spaces, line breaks of every kind, CJK, emoji,
# graphemes of several code points (which the model splits across pieces).
HARD_QUERIES = {
    "plain ASCII": "Hello, world!",
    "leading and trailing spaces": "   three leading spaces, two trailing  ",
    "a lone space": " ",
    "LF line breaks": "line one\nline two\n\nafter a blank line\n",
    "only line breaks": "\n\n\n",
    "CRLF and lone CR": "windows\r\nline\r\nendings, a lone\rcarriage return\r\n\r\n",
    "JSON and escapes": '{"error": "not one"} \\ "quotes" \\n \u0000 nul \u2028 \u2029',
    "CJK": "中文字符，日本語のテキスト、한국어 문장입니다。",
    "emoji": "emoji 😀🎉🚀 outside the BMP",
    "family and flag graphemes": "family 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵🏳️‍🌈, skin tone 👍🏽",
    "combining marks": "cafe\u0301 na\u0308ive \u0915\u094d\u0937",
}

MODEL = "stand-in"


def ask(query):
    return [{"role": "user", "content": query}]


@pytest.mark.parametrize("label", HARD_QUERIES)
def test_streamed_pieces_reassemble_exactly(example, label):
    query = HARD_QUERIES[label]
    client = ollama.Client(host=example.url)
    parts = list(client.chat(model=MODEL, messages=ask(query), stream=True))
    pieces = [part.message.content for part in parts[:-1]]
    assert "".join(pieces) == query
    assert pieces == list(query), "one piece per character"
    assert all(part.message.role == "assistant" for part in parts)
    assert all(part.model == MODEL and part.created_at for part in parts)
    assert not any(part.done for part in parts[:-1])
    last = parts[-1]
    assert last.done is True
    assert last.done_reason == "stop"
    assert last.message.content == ""
    assert last.eval_count == len(query)
    assert last.total_duration > 0


def test_not_streaming_answers_one_object(example):
    query = "one object, 中文 and 👋\r\n"
    response = ollama.Client(host=example.url).chat(model=MODEL, messages=ask(query))
    assert response.message.role == "assistant"
    assert response.message.content == query
    assert response.done is True
    assert response.done_reason == "stop"
    assert response.eval_count == len(query)


def test_the_stream_is_ndjson_with_streaming_headers(example):
    body = {"model": MODEL, "messages": ask("ab"), "stream": True}
    with httpx.stream("POST", f"{example.url}/api/chat", json=body) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        lines = list(response.iter_lines())
    # No blank or comment line: every line is one JSON object.
    assert len(lines) == 3
    with jsonlines.Reader(lines) as reader:
        objects = list(reader.iter(type=dict))
    assert [o["message"]["content"] for o in objects] == ["a", "b", ""]


def test_a_client_that_stops_iterating_stops_generation(paced_example):
    query = "x" * 200  # 8 s at 40 ms a piece
    start = len(paced_example.lines)
    parts = ollama.Client(host=paced_example.url).chat(
        model=MODEL, messages=ask(query), stream=True
    )
    for i, part in enumerate(parts):
        assert part.message.content == "x"
        if i == 2:
            break
    parts.close()  # what leaving the loop does once the generator is collected
    match = paced_example.wait_for_log(
        r"stopped generating: .*the client disconnected.* sent=(\d+)", timeout=5, start=start
    )
    assert int(match.group(1)) < 20, "the model ran on after the client left"


def test_refused_requests_are_ollama_errors(example):
    client = ollama.Client(host=example.url)
    for stream in (True, False):
        with pytest.raises(ollama.ResponseError) as raised:
            list(client.chat(model=MODEL, messages=ask("x" * 70_000), stream=stream))
        assert raised.value.status_code == 413
        assert raised.value.error == "the request body is over 65536 bytes"
    # The client checks the model name itself; a raw request without one gets Ollama's answer.
    response = httpx.post(f"{example.url}/api/chat", json={"messages": ask("hi")})
    assert response.status_code == 400
    assert response.json() == {"error": "model is required"}


@pytest.mark.parametrize("framing,content_type", [
    ("ndjson", "application/x-ndjson"),
    ("jsonl", "application/jsonl"),
])
def test_a_json_lines_reader_reads_the_other_framings(example, framing, content_type):
    query = "".join(HARD_QUERIES.values())
    url = f"{example.url}/stream/{framing}"
    with httpx.stream("POST", url, json={"query": query}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        with jsonlines.Reader(response.iter_lines()) as reader:
            pieces = [item["piece"] for item in reader.iter(type=dict)]
    assert "".join(pieces) == query
    assert len(pieces) == len(query)


def test_text_arrives_as_it_was_sent(example):
    query = "".join(HARD_QUERIES.values())
    with httpx.stream("POST", f"{example.url}/stream/text", json={"query": query}) as response:
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        text = response.read().decode("utf-8")
    assert text == query


def test_json_seq_records_parse_one_by_one(example):
    import json

    query = "seq 👋\n"
    with httpx.stream("POST", f"{example.url}/stream/json-seq", json={"query": query}) as response:
        assert response.headers["content-type"] == "application/json-seq"
        body = response.read()
    # RFC 7464: each record is RS, a JSON text, LF.
    records = body.split(b"\x1e")
    assert records[0] == b""
    assert all(record.endswith(b"\n") for record in records[1:])
    assert "".join(json.loads(record)["piece"] for record in records[1:]) == query
