// The official `openai` npm package against both examples' /v1/chat/completions and
// /v1/responses: every answer reassembled exactly, usage totals, the providers' error
// statuses, a mid-stream failure raised as an APIError, keep-alive comments ignored, aborts
// that stop the model, and CORS for the SDK's headers.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import OpenAI from 'openai';

import {
  EXAMPLES, HARD_QUERIES, generationStopped, postRaw, startExample,
} from '../support.js';

const ALLOWED_ORIGIN = 'http://allowed.example';
const PACED_DELAY_MS = 100;
const ask = (query) => [{ role: 'user', content: query }];

for (const name of EXAMPLES) {
  describe(`${name} with openai-node`, () => {
    // A fast server, and one paced like a model with keep-alives between the pieces.
    let fast;
    let paced;
    const client = (server, options = {}) =>
      new OpenAI({ apiKey: 'test-key', baseURL: `${server.url}/v1`, maxRetries: 0, ...options });

    before(async () => {
      [fast, paced] = await Promise.all([
        startExample(name, { env: { GPT_DELAY_MS: 1, ALLOWED_ORIGINS: ALLOWED_ORIGIN } }),
        startExample(name, { env: { GPT_DELAY_MS: PACED_DELAY_MS, KEEP_ALIVE_MS: 20 } }),
      ]);
    });
    after(async () => {
      await Promise.all([fast?.stop(), paced?.stop()]);
    });

    for (const [label, query] of Object.entries(HARD_QUERIES)) {
      test(`chat completions stream reassembles exactly: ${label}`, async () => {
        const stream = await client(fast).chat.completions.create({
          model: 'echo', messages: ask(query), stream: true,
        });
        let text = '';
        const finishReasons = [];
        let ids = new Set();
        for await (const chunk of stream) {
          ids.add(chunk.id);
          for (const choice of chunk.choices) {
            text += choice.delta.content ?? '';
            if (choice.finish_reason) finishReasons.push(choice.finish_reason);
          }
        }
        assert.equal(text, query);
        assert.deepEqual(finishReasons, ['stop']);
        assert.equal(ids.size, 1, 'one id for the whole stream');
      });

      test(`responses stream reassembles exactly: ${label}`, async () => {
        const stream = await client(fast).responses.create({
          model: 'echo', input: query, stream: true,
        });
        let text = '';
        const types = [];
        let completed;
        for await (const event of stream) {
          types.push(event.type);
          if (event.type === 'response.output_text.delta') text += event.delta;
          if (event.type === 'response.completed') completed = event.response;
        }
        assert.equal(text, query);
        assert.equal(types[0], 'response.created');
        assert.equal(types.at(-1), 'response.completed');
        assert.equal(completed.output_text ?? completed.output[0].content[0].text, query);
      });
    }

    test('the chat stream helper and include_usage: the SDK sees the usage totals', async () => {
      const query = 'Usage, please: 中文 😀';
      const stream = client(fast).chat.completions.stream({
        model: 'echo', messages: ask(query), stream: true, stream_options: { include_usage: true },
      });
      let usage;
      for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
      const completion = await stream.finalChatCompletion();
      assert.equal(completion.choices[0].message.content, query);
      assert.equal(completion.choices[0].finish_reason, 'stop');
      const pieces = [...query].length;
      assert.deepEqual(usage, { prompt_tokens: pieces, completion_tokens: pieces, total_tokens: 2 * pieces });
    });

    test('a non-streamed chat completion is JSON the SDK parses', async () => {
      const query = '  spaces, \n\n and 👨‍👩‍👧‍👦';
      const completion = await client(fast).chat.completions.create({ model: 'echo', messages: ask(query) });
      assert.equal(typeof completion, 'object');
      assert.equal(completion.object, 'chat.completion');
      assert.equal(completion.choices[0].message.content, query);
      assert.equal(completion.usage.completion_tokens, [...query].length);
    });

    test('max_tokens cuts the answer with finish_reason "length"', async () => {
      const completion = await client(fast).chat.completions.create({
        model: 'echo', messages: ask('abcdefgh'), max_tokens: 3,
      });
      assert.equal(completion.choices[0].message.content, 'abc');
      assert.equal(completion.choices[0].finish_reason, 'length');
    });

    test('the responses stream helper gives the final response', async () => {
      const query = 'final answer: 日本語';
      const stream = client(fast).responses.stream({ model: 'echo', input: query });
      const response = await stream.finalResponse();
      assert.equal(response.output_text, query);
      assert.equal(response.status, 'completed');
      assert.equal(response.usage.output_tokens, [...query].length);
    });

    test('refusals come with the status and error class OpenAI uses', async () => {
      const chat = (server, body, options) => client(server, options).chat.completions.create(body);
      await assert.rejects(chat(fast, { model: 'gpt-none', messages: ask('x') }), (error) => {
        assert.ok(error instanceof OpenAI.NotFoundError, String(error));
        assert.equal(error.status, 404);
        assert.equal(error.code, 'model_not_found');
        assert.equal(error.param, 'model');
        return true;
      });
      await assert.rejects(chat(fast, { model: 'echo', messages: [] }), (error) => {
        assert.ok(error instanceof OpenAI.BadRequestError, String(error));
        assert.equal(error.param, 'messages');
        return true;
      });
      await assert.rejects(chat(fast, { model: 'echo' }), OpenAI.BadRequestError);
      await assert.rejects(
        client(fast).responses.create({ model: 'echo', input: 42, stream: true }),
        OpenAI.BadRequestError,
      );
      // No key at all: the SDK refuses to send, so the 401 is checked on the wire.
      const unauthorized = await postRaw(fast.url, '/v1/chat/completions', { model: 'echo', messages: ask('x') });
      assert.equal(unauthorized.status, 401);
      assert.equal(unauthorized.headers.get('content-type'), 'application/json');
      assert.equal(JSON.parse(unauthorized.text).error.code, 'invalid_api_key');
      const missing = await postRaw(fast.url, '/v1/nothing', {}, { authorization: 'Bearer k' });
      assert.equal(missing.status, 404);
      assert.equal(JSON.parse(missing.text).error.type, 'invalid_request_error');
    });

    test('a mid-stream failure is raised as an APIError, not a short answer', async () => {
      const stream = await client(fast).chat.completions.create({
        model: 'echo-fail', messages: ask('this answer fails after three pieces'), stream: true,
      });
      let text = '';
      await assert.rejects(async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      }, (error) => {
        assert.ok(error instanceof OpenAI.APIError, String(error));
        assert.match(error.message, /failed on purpose/);
        return true;
      });
      assert.equal(text, 'thi');
    });

    test('a failed response ends with one response.failed event', async () => {
      const stream = await client(fast).responses.create({
        model: 'echo-fail', input: 'this response fails', stream: true,
      });
      const events = [];
      for await (const event of stream) events.push(event);
      const failed = events.filter((event) => event.type === 'response.failed');
      assert.equal(failed.length, 1);
      assert.equal(events.at(-1).type, 'response.failed');
      assert.equal(failed[0].response.status, 'failed');
      assert.match(failed[0].response.error.message, /failed on purpose/);
      assert.ok(!events.some((event) => event.type === 'response.completed'));
    });

    test('keep-alive comments between the pieces are ignored by the SDK', async () => {
      const query = 'slow\n\nand steady';
      const raw = await postRaw(paced.url, '/v1/chat/completions',
        { model: 'echo', messages: ask(query), stream: true }, { authorization: 'Bearer k' });
      assert.match(raw.text, /^:\n/m, 'the server wrote keep-alive comments');
      assert.doesNotMatch(raw.text, /^(id|retry|event):/m, 'no id, retry or event lines');
      assert.equal(raw.text.match(/^data: \[DONE\]$/gm).length, 1, '[DONE] exactly once');
      const stream = await client(paced).chat.completions.create({ model: 'echo', messages: ask(query), stream: true });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      assert.equal(text, query);
    });

    for (const route of ['chat', 'responses']) {
      test(`aborting the ${route} stream stops the model within one piece`, async () => {
        const query = 'a long answer that the client abandons early';
        const from = paced.lines.length;
        const stream = route === 'chat'
          ? await client(paced).chat.completions.create({ model: 'echo', messages: ask(query), stream: true })
          : await client(paced).responses.create({ model: 'echo', input: query, stream: true });
        let received = 0;
        for await (const event of stream) {
          if (event.choices?.[0]?.delta.content || event.type === 'response.output_text.delta') received++;
          if (received === 3) stream.controller.abort();
        }
        const { sent, total } = await generationStopped(paced, 'the client disconnected', from);
        assert.ok(sent <= received + 1, `the model sent ${sent} pieces after the client left at ${received}`);
        assert.ok(sent < total);
      });
    }

    test('shutting down ends an open stream with an APIError, not a short answer', async () => {
      const server = await startExample(name, { env: { GPT_DELAY_MS: 100 } });
      try {
        const stream = await client(server).chat.completions.create({
          model: 'echo', messages: ask('an answer cut by a shutdown'), stream: true,
        });
        let text = '';
        await assert.rejects(async () => {
          for await (const chunk of stream) {
            text += chunk.choices[0]?.delta.content ?? '';
            if ([...text].length === 2) server.interrupt();
          }
        }, (error) => {
          assert.ok(error instanceof OpenAI.APIError, String(error));
          assert.match(error.message, /shutting down/);
          return true;
        });
        assert.equal(await server.exited, 0);
      } finally {
        await server.stop();
      }
    });

    test('CORS lets an allowed page send the SDK headers', async () => {
      const response = await fetch(`${fast.url}/v1/chat/completions`, {
        method: 'OPTIONS',
        headers: {
          origin: ALLOWED_ORIGIN,
          'access-control-request-method': 'POST',
          'access-control-request-headers':
            'authorization,content-type,x-stainless-os,x-stainless-lang,x-stainless-retry-count,x-stainless-timeout',
        },
      });
      assert.ok(response.ok, `preflight answered ${response.status}`);
      assert.equal(response.headers.get('access-control-allow-origin'), ALLOWED_ORIGIN);
      const allowed = response.headers.get('access-control-allow-headers').split(',').map((h) => h.trim());
      for (const header of ['authorization', 'x-stainless-os', 'x-stainless-retry-count', 'x-stainless-timeout']) {
        assert.ok(allowed.includes(header), `${header} in ${allowed}`);
      }
      const other = await fetch(`${fast.url}/v1/chat/completions`, {
        method: 'OPTIONS',
        headers: { origin: 'http://other.example', 'access-control-request-method': 'POST' },
      });
      assert.equal(other.headers.get('access-control-allow-origin'), null);
    });
  });
}
