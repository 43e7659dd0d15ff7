// The official `@anthropic-ai/sdk` npm package against both examples' /v1/messages: every
// answer reassembled exactly, usage, pings and keep-alive comments skipped, the providers'
// error statuses, a mid-stream `event: error` raised as an APIError, aborts that stop the
// model, and CORS for the SDK's headers.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import Anthropic from '@anthropic-ai/sdk';

import {
  EXAMPLES, HARD_QUERIES, generationStopped, postRaw, startExample,
} from '../support.js';

const ALLOWED_ORIGIN = 'http://allowed.example';
const ask = (query) => [{ role: 'user', content: query }];
const HEADERS = { 'x-api-key': 'test-key', 'anthropic-version': '2023-06-01' };

for (const name of EXAMPLES) {
  describe(`${name} with @anthropic-ai/sdk`, () => {
    let fast;
    let paced;
    const client = (server) =>
      new Anthropic({ apiKey: 'test-key', baseURL: server.url, maxRetries: 0 });

    before(async () => {
      [fast, paced] = await Promise.all([
        startExample(name, { env: { GPT_DELAY_MS: 1, ALLOWED_ORIGINS: ALLOWED_ORIGIN } }),
        startExample(name, { env: { GPT_DELAY_MS: 100, KEEP_ALIVE_MS: 20 } }),
      ]);
    });
    after(async () => {
      await Promise.all([fast?.stop(), paced?.stop()]);
    });

    for (const [label, query] of Object.entries(HARD_QUERIES)) {
      test(`messages stream reassembles exactly: ${label}`, async () => {
        const stream = await client(fast).messages.create({
          model: 'echo', max_tokens: 1024, messages: ask(query), stream: true,
        });
        let text = '';
        const types = [];
        for await (const event of stream) {
          types.push(event.type);
          if (event.type === 'content_block_delta') text += event.delta.text;
        }
        assert.equal(text, query);
        assert.equal(types[0], 'message_start');
        assert.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
        assert.ok(!types.includes('ping'), 'the SDK skips pings');
      });
    }

    test('the stream helper gives the final message with its usage', async () => {
      const query = 'final: 한국어 🚀 \n\n done';
      const stream = client(fast).messages.stream({ model: 'echo', max_tokens: 1024, messages: ask(query) });
      let deltas = '';
      stream.on('text', (text) => { deltas += text; });
      const message = await stream.finalMessage();
      assert.equal(deltas, query);
      assert.equal(message.content[0].text, query);
      assert.equal(message.stop_reason, 'end_turn');
      assert.equal(message.usage.input_tokens, [...query].length);
      assert.equal(message.usage.output_tokens, [...query].length);
    });

    test('max_tokens ends the message with stop_reason "max_tokens"', async () => {
      const message = await client(fast).messages
        .stream({ model: 'echo', max_tokens: 4, messages: ask('abcdefgh') })
        .finalMessage();
      assert.equal(message.content[0].text, 'abcd');
      assert.equal(message.stop_reason, 'max_tokens');
    });

    test('pings and keep-alive comments are on the wire and the SDK ignores both', async () => {
      const query = 'slow and steady';
      const raw = await postRaw(paced.url, '/v1/messages',
        { model: 'echo', max_tokens: 100, messages: ask(query), stream: true }, HEADERS);
      assert.match(raw.text, /^event: ping$/m);
      assert.match(raw.text, /^:\n/m, 'the server wrote keep-alive comments');
      assert.doesNotMatch(raw.text, /^(id|retry):/m);
      const message = await client(paced).messages
        .stream({ model: 'echo', max_tokens: 100, messages: ask(query) })
        .finalMessage();
      assert.equal(message.content[0].text, query);
    });

    test('refusals come with the status and error class Anthropic uses', async () => {
      const create = (body) => client(fast).messages.create({ stream: true, ...body });
      await assert.rejects(create({ model: 'claude-none', max_tokens: 10, messages: ask('x') }), (error) => {
        assert.ok(error instanceof Anthropic.NotFoundError, String(error));
        assert.equal(error.error.type, 'error');
        assert.equal(error.error.error.type, 'not_found_error');
        return true;
      });
      await assert.rejects(create({ model: 'echo', messages: ask('x') }), (error) => {
        assert.ok(error instanceof Anthropic.BadRequestError, String(error));
        assert.match(error.error.error.message, /^max_tokens:/);
        return true;
      });
      await assert.rejects(create({ model: 'echo', max_tokens: 10, messages: [] }), Anthropic.BadRequestError);
      const unauthorized = await postRaw(fast.url, '/v1/messages',
        { model: 'echo', max_tokens: 10, messages: ask('x'), stream: true }, { 'anthropic-version': '2023-06-01' });
      assert.equal(unauthorized.status, 401);
      assert.deepEqual(JSON.parse(unauthorized.text).error.type, 'authentication_error');
      const noVersion = await postRaw(fast.url, '/v1/messages',
        { model: 'echo', max_tokens: 10, messages: ask('x'), stream: true }, { 'x-api-key': 'k' });
      assert.equal(noVersion.status, 400);
      assert.equal(JSON.parse(noVersion.text).type, 'error');
    });

    test('a mid-stream error event is raised as an APIError', async () => {
      const stream = await client(fast).messages.create({
        model: 'echo-fail', max_tokens: 100, messages: ask('this message fails'), stream: true,
      });
      let text = '';
      await assert.rejects(async () => {
        for await (const event of stream) if (event.type === 'content_block_delta') text += event.delta.text;
      }, (error) => {
        assert.ok(error instanceof Anthropic.APIError, String(error));
        assert.match(error.message, /failed on purpose/);
        return true;
      });
      assert.equal(text, 'thi');
      await assert.rejects(
        client(fast).messages.stream({ model: 'echo-fail', max_tokens: 100, messages: ask('again') }).finalMessage(),
        Anthropic.APIError,
      );
    });

    test('aborting the stream stops the model within one piece', async () => {
      const from = paced.lines.length;
      const stream = client(paced).messages.stream({
        model: 'echo', max_tokens: 1000, messages: ask('a long answer that the client abandons early'),
      });
      let received = 0;
      stream.on('text', () => {
        received++;
        if (received === 3) stream.abort();
      });
      await assert.rejects(stream.finalMessage(), Anthropic.APIUserAbortError);
      const { sent, total } = await generationStopped(paced, 'the client disconnected', from);
      assert.ok(sent <= received + 1, `the model sent ${sent} pieces after the client left at ${received}`);
      assert.ok(sent < total);
    });

    test('shutting down ends an open stream with an error event, not a short answer', async () => {
      const server = await startExample(name, { env: { GPT_DELAY_MS: 100 } });
      try {
        const stream = client(server).messages.stream({
          model: 'echo', max_tokens: 100, messages: ask('an answer cut by a shutdown'),
        });
        let pieces = 0;
        stream.on('text', () => {
          if (++pieces === 2) server.interrupt();
        });
        await assert.rejects(stream.finalMessage(), (error) => {
          assert.ok(error instanceof Anthropic.APIError, String(error));
          assert.match(error.message, /shutting down/);
          return true;
        });
        assert.equal(await server.exited, 0);
      } finally {
        await server.stop();
      }
    });

    test('CORS lets an allowed page send the SDK headers', async () => {
      const response = await fetch(`${fast.url}/v1/messages`, {
        method: 'OPTIONS',
        headers: {
          origin: ALLOWED_ORIGIN,
          'access-control-request-method': 'POST',
          'access-control-request-headers':
            'x-api-key,anthropic-version,anthropic-dangerous-direct-browser-access,content-type,x-stainless-arch,x-stainless-runtime-version',
        },
      });
      assert.ok(response.ok, `preflight answered ${response.status}`);
      assert.equal(response.headers.get('access-control-allow-origin'), ALLOWED_ORIGIN);
      const allowed = response.headers.get('access-control-allow-headers').split(',').map((h) => h.trim());
      for (const header of ['x-api-key', 'anthropic-version', 'anthropic-dangerous-direct-browser-access', 'x-stainless-arch']) {
        assert.ok(allowed.includes(header), `${header} in ${allowed}`);
      }
    });
  });
}
