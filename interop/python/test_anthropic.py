"""The official `anthropic` package (PyPI) against both examples' /v1/messages."""

import json

import anthropic
import pytest

from conftest import HARD_QUERIES, post_raw

HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def client(server):
    return anthropic.Anthropic(api_key="test-key", base_url=server.url, max_retries=0)


def ask(query):
    return [{"role": "user", "content": query}]


@pytest.mark.parametrize("query", HARD_QUERIES.values(), ids=HARD_QUERIES.keys())
def test_messages_stream_reassembles_exactly(fast, query):
    events = list(client(fast).messages.create(
        model="echo", max_tokens=1024, messages=ask(query), stream=True))
    types = [event.type for event in events]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == query
    assert types[0] == "message_start"
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "ping" not in types


def test_stream_helper_final_message_and_usage(fast):
    query = "final: 한국어 🚀\n\ndone"
    with client(fast).messages.stream(model="echo", max_tokens=1024, messages=ask(query)) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == query
    assert message.content[0].text == query
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == len(query)
    assert message.usage.output_tokens == len(query)


def test_pings_and_keep_alive_comments_are_ignored(paced):
    query = "slow and steady"
    body = {"model": "echo", "max_tokens": 100, "messages": ask(query), "stream": True}
    _, _, raw = post_raw(paced, "/v1/messages", body, HEADERS)
    assert "event: ping\n" in raw
    assert "\n:\n" in raw, "the server wrote keep-alive comments"
    with client(paced).messages.stream(model="echo", max_tokens=100, messages=ask(query)) as stream:
        assert "".join(stream.text_stream) == query


def test_refusals_raise_the_sdk_error_classes(fast):
    with pytest.raises(anthropic.NotFoundError) as error:
        client(fast).messages.create(model="claude-none", max_tokens=10, messages=ask("x"), stream=True)
    assert error.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as error:
        client(fast).messages.create(model="echo", max_tokens=10, messages=[], stream=True)
    assert error.value.body["type"] == "error"
    with pytest.raises(anthropic.AuthenticationError) as error:
        client(fast).messages.create(model="echo", max_tokens=10, messages=ask("x"), stream=True,
                                     extra_headers={"Authorization": anthropic.omit, "X-Api-Key": anthropic.omit})
    assert error.value.body["error"]["type"] == "authentication_error"
    status, _, text = post_raw(fast, "/v1/messages",
                               {"model": "echo", "max_tokens": 10, "messages": ask("x"), "stream": True},
                               {"x-api-key": "k"})
    assert status == 400
    assert json.loads(text)["error"]["type"] == "invalid_request_error"


def test_mid_stream_error_event_raises_api_error(fast):
    stream = client(fast).messages.create(
        model="echo-fail", max_tokens=100, messages=ask("this message fails"), stream=True)
    text = ""
    with pytest.raises(anthropic.APIError, match="failed on purpose"):
        for event in stream:
            if event.type == "content_block_delta":
                text += event.delta.text
    assert text == "thi"


def test_closing_the_stream_stops_the_model(paced):
    start = len(paced.lines)
    received = 0
    with client(paced).messages.stream(
            model="echo", max_tokens=1000, messages=ask("a long answer that the client abandons")) as stream:
        for _ in stream.text_stream:
            received += 1
            if received == 3:
                break
    sent, total = paced.generation_stopped("the client disconnected", start)
    assert sent <= received + 1
    assert sent < total
