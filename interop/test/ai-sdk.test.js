// Vercel's AI SDK (`ai` with `@ai-sdk/openai-compatible`) against both examples'
// /v1/chat/completions: every answer reassembled exactly, usage totals, the mid-stream
// failure as an error part (not a short success), and an abort that stops the model.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { streamText } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';

import { EXAMPLES, HARD_QUERIES, generationStopped, startExample } from '../support.js';

for (const name of EXAMPLES) {
  describe(`${name} with the AI SDK`, () => {
    let fast;
    let paced;
    const provider = (server) => createOpenAICompatible({
      name: 'tower-sse-example', baseURL: `${server.url}/v1`, apiKey: 'test-key', includeUsage: true,
    });

    before(async () => {
      [fast, paced] = await Promise.all([
        startExample(name, { env: { GPT_DELAY_MS: 1 } }),
        startExample(name, { env: { GPT_DELAY_MS: 100, KEEP_ALIVE_MS: 20 } }),
      ]);
    });
    after(async () => {
      await Promise.all([fast?.stop(), paced?.stop()]);
    });

    /** Streams `query` and collects the parts the SDK produced. */
    async function run(server, query, { model = 'echo', abortAfter, onPart } = {}) {
      const controller = new AbortController();
      const result = streamText({
        model: provider(server).chatModel(model),
        prompt: query,
        maxRetries: 0,
        abortSignal: controller.signal,
        onError: () => {}, // errors are read from the parts below
      });
      const parts = [];
      let text = '';
      for await (const part of result.fullStream) {
        parts.push(part);
        if (part.type === 'text-delta') {
          text += part.text;
          if (abortAfter && [...text].length === abortAfter) controller.abort();
        }
        onPart?.(part);
      }
      return { parts, text, result };
    }

    for (const [label, query] of Object.entries(HARD_QUERIES)) {
      test(`streamText reassembles exactly: ${label}`, async () => {
        const { parts, text } = await run(fast, query);
        assert.equal(text, query);
        assert.ok(!parts.some((part) => part.type === 'error'), JSON.stringify(parts.filter((p) => p.type === 'error')));
        const finish = parts.find((part) => part.type === 'finish');
        assert.equal(finish.finishReason, 'stop');
      });
    }

    test('include_usage: the SDK sees the usage totals', async () => {
      const query = 'usage 😀 中';
      const { text, result } = await run(paced, query);
      assert.equal(text, query);
      const usage = await result.totalUsage;
      const pieces = [...query].length;
      assert.equal(usage.inputTokens, pieces);
      assert.equal(usage.outputTokens, pieces);
      assert.equal(usage.totalTokens, 2 * pieces);
    });

    test('a mid-stream failure is an error part, not a short success', async () => {
      const { parts, text } = await run(fast, 'this answer fails after three pieces', { model: 'echo-fail' });
      assert.equal(text, 'thi');
      const errors = parts.filter((part) => part.type === 'error');
      assert.equal(errors.length, 1, JSON.stringify(parts.map((p) => p.type)));
      assert.match(JSON.stringify(errors[0].error), /failed on purpose/);
    });

    test('aborting stops the model within one piece', async () => {
      const from = paced.lines.length;
      const { text } = await run(paced, 'a long answer that the client abandons early', { abortAfter: 3 });
      assert.equal(text, 'a l');
      const { sent, total } = await generationStopped(paced, 'the client disconnected', from);
      assert.ok(sent <= 4, `the model sent ${sent} pieces after the client left at 3`);
      assert.ok(sent < total);
    });
  });
}
