"""The official `openai` package (PyPI) against both examples' /v1/chat/completions and
/v1/responses."""

import asyncio
import json

import openai
import pytest

from conftest import HARD_QUERIES, post_raw


def client(server, **options):
    return openai.OpenAI(api_key="test-key", base_url=f"{server.url}/v1", max_retries=0, **options)


def ask(query):
    return [{"role": "user", "content": query}]


@pytest.mark.parametrize("query", HARD_QUERIES.values(), ids=HARD_QUERIES.keys())
def test_chat_stream_reassembles_exactly(fast, query):
    stream = client(fast).chat.completions.create(model="echo", messages=ask(query), stream=True)
    text, finish_reasons, ids = "", [], set()
    for chunk in stream:
        ids.add(chunk.id)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
    assert text == query
    assert finish_reasons == ["stop"]
    assert len(ids) == 1


@pytest.mark.parametrize("query", HARD_QUERIES.values(), ids=HARD_QUERIES.keys())
def test_responses_stream_reassembles_exactly(fast, query):
    stream = client(fast).responses.create(model="echo", input=query, stream=True)
    events = list(stream)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == query
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == query
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_include_usage_gives_the_usage_totals(fast):
    query = "usage 中文 😀"
    chunks = list(client(fast).chat.completions.create(
        model="echo", messages=ask(query), stream=True, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    n = len(query)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (n, n, 2 * n)
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_non_streamed_chat_completion(fast):
    query = " spaces\n\nand 👍🏽"
    completion = client(fast).chat.completions.create(model="echo", messages=ask(query))
    assert completion.choices[0].message.content == query
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == len(query)


def test_responses_stream_helper(fast):
    query = "final: 日本語"
    with client(fast).responses.stream(model="echo", input=query) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        response = stream.get_final_response()
    assert deltas == query
    assert response.output_text == query
    assert response.usage.output_tokens == len(query)


def test_refusals_raise_the_sdk_error_classes(fast):
    with pytest.raises(openai.NotFoundError) as error:
        client(fast).chat.completions.create(model="gpt-none", messages=ask("x"))
    assert error.value.code == "model_not_found"
    assert error.value.param == "model"
    with pytest.raises(openai.BadRequestError) as error:
        client(fast).chat.completions.create(model="echo", messages=[])
    assert error.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        client(fast).responses.create(model="echo", input=42, stream=True)
    with pytest.raises(openai.AuthenticationError) as error:
        client(fast).chat.completions.create(
            model="echo", messages=ask("x"), extra_headers={"Authorization": openai.omit})
    assert error.value.code == "invalid_api_key"
    status, headers, text = post_raw(fast, "/v1/chat/completions", {"model": "echo"})
    assert status == 401
    assert headers["content-type"] == "application/json"
    assert set(json.loads(text)["error"]) == {"message", "type", "param", "code"}


def test_mid_stream_failure_raises_api_error(fast):
    stream = client(fast).chat.completions.create(
        model="echo-fail", messages=ask("this answer fails after three pieces"), stream=True)
    text = ""
    with pytest.raises(openai.APIError, match="failed on purpose"):
        for chunk in stream:
            text += chunk.choices[0].delta.content or ""
    assert text == "thi"


def test_failed_response_ends_with_response_failed(fast):
    events = list(client(fast).responses.create(model="echo-fail", input="this fails", stream=True))
    assert events[-1].type == "response.failed"
    assert [e.type for e in events].count("response.failed") == 1
    assert "response.completed" not in [e.type for e in events]
    assert events[-1].response.status == "failed"
    assert "failed on purpose" in events[-1].response.error.message


def test_keep_alive_comments_are_ignored(paced):
    query = "slow\n\nand steady"
    _, _, raw = post_raw(paced, "/v1/chat/completions",
                         {"model": "echo", "messages": ask(query), "stream": True},
                         {"authorization": "Bearer k"})
    assert "\n:\n" in raw, "the server wrote keep-alive comments"
    assert raw.count("data: [DONE]") == 1
    assert not any(line.startswith(("id:", "retry:", "event:")) for line in raw.splitlines())
    stream = client(paced).chat.completions.create(model="echo", messages=ask(query), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == query


@pytest.mark.parametrize("route", ["chat", "responses"])
def test_closing_the_stream_stops_the_model(paced, route):
    query = "a long answer that the client abandons early"
    start = len(paced.lines)
    if route == "chat":
        stream = client(paced).chat.completions.create(model="echo", messages=ask(query), stream=True)
    else:
        stream = client(paced).responses.create(model="echo", input=query, stream=True)
    received = 0
    for event in stream:
        if getattr(event, "type", None) == "response.output_text.delta" or (
                getattr(event, "choices", None) and event.choices[0].delta.content):
            received += 1
        if received == 3:
            stream.close()
            break
    sent, total = paced.generation_stopped("the client disconnected", start)
    assert sent <= received + 1
    assert sent < total


def test_async_client_streams_and_closes(paced):
    async def main():
        async with openai.AsyncOpenAI(api_key="k", base_url=f"{paced.url}/v1", max_retries=0) as aclient:
            stream = await aclient.chat.completions.create(model="echo", messages=ask("async 中"), stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(main()) == "async 中"
