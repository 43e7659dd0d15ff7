// The official `ollama` npm client against both examples' `POST /api/chat`, and readers that
// no one here wrote (`ndjson`, `json-text-sequence`) against `POST /stream/...`: every piece
// reassembles exactly, the final object says `done`, and a client that stops stops the model.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { Ollama } from 'ollama';
import ndjson from 'ndjson';
import { Parser as JsonSeqParser } from 'json-text-sequence';

import { EXAMPLES, HARD_QUERIES, startExample } from '../support.js';

const MODEL = 'stand-in';
const ask = (query) => [{ role: 'user', content: query }];

/** POSTs `{"query"}` to `/stream/<framing>` and parses the body with `parser` (a stream). */
async function readWith(baseUrl, framing, query, parser) {
  const response = await fetch(new URL(`/stream/${framing}`, baseUrl), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ query }),
  });
  assert.equal(response.status, 200);
  const items = [];
  parser.on('data', (item) => items.push(item));
  await pipeline(Readable.fromWeb(response.body), parser);
  return { contentType: response.headers.get('content-type'), items };
}

for (const name of EXAMPLES) {
  describe(name, () => {
    let fast;
    let paced;

    before(async () => {
      [fast, paced] = await Promise.all([
        startExample(name, { env: { GPT_DELAY_MS: 1 } }),
        startExample(name, { env: { GPT_DELAY_MS: 40 } }),
      ]);
    });
    after(async () => {
      await Promise.all([fast?.stop(), paced?.stop()]);
    });

    for (const [label, query] of Object.entries(HARD_QUERIES)) {
      test(`streamed pieces reassemble exactly: ${label}`, async () => {
        const client = new Ollama({ host: fast.url });
        const stream = await client.chat({ model: MODEL, messages: ask(query), stream: true });
        const parts = [];
        for await (const part of stream) parts.push(part);
        const last = parts.pop();
        assert.equal(parts.map((p) => p.message.content).join(''), query);
        assert.deepEqual(parts.map((p) => p.message.content), [...query]);
        assert.ok(parts.every((p) => p.message.role === 'assistant' && p.done === false));
        assert.ok(parts.every((p) => p.model === MODEL && !Number.isNaN(Date.parse(p.created_at))));
        assert.equal(last.done, true);
        assert.equal(last.done_reason, 'stop');
        assert.equal(last.message.content, '');
        assert.equal(last.eval_count, [...query].length);
      });
    }

    test('"stream": false answers one object', async () => {
      const query = 'one object, 中文 and 👋\r\n';
      const response = await new Ollama({ host: fast.url }).chat({ model: MODEL, messages: ask(query) });
      assert.equal(response.message.content, query);
      assert.equal(response.done, true);
      assert.equal(response.done_reason, 'stop');
    });

    test('a client that stops iterating and aborts stops the model', async () => {
      const start = paced.lines.length;
      const client = new Ollama({ host: paced.url });
      const stream = await client.chat({ model: MODEL, messages: ask('y'.repeat(200)), stream: true });
      let seen = 0;
      for await (const part of stream) {
        assert.equal(part.message.content, 'y');
        if (++seen === 3) break;
      }
      // Leaving the loop ends the iterator; `abort()` is how ollama-js lets go of the response.
      stream.abort();
      const [, sent] = await paced.waitForLog(
        /stopped generating: .*the client disconnected.* sent=(\d+)/, 5_000, start,
      );
      assert.ok(Number(sent) < 20, `the model sent ${sent} pieces after the client left`);
    });

    test('refused requests are ollama errors', async () => {
      const client = new Ollama({ host: fast.url });
      await assert.rejects(
        client.chat({ model: MODEL, messages: ask('x'.repeat(70_000)), stream: true }),
        (error) => error.status_code === 413 && /over 65536 bytes/.test(error.error),
      );
    });

    test('ndjson reads /stream/ndjson and /stream/jsonl: one JSON object per line', async () => {
      const query = Object.values(HARD_QUERIES).join('');
      for (const [framing, type] of [['ndjson', 'application/x-ndjson'], ['jsonl', 'application/jsonl']]) {
        const { contentType, items } = await readWith(fast.url, framing, query, ndjson.parse({ strict: true }));
        assert.equal(contentType, type);
        assert.equal(items.map((item) => item.piece).join(''), query);
        assert.equal(items.length, [...query].length);
      }
    });

    test('json-text-sequence reads /stream/json-seq with no damaged record', async () => {
      const query = Object.values(HARD_QUERIES).join('');
      const parser = new JsonSeqParser();
      const damaged = [];
      parser.on('invalid', (buf) => damaged.push(buf)).on('truncated', (buf) => damaged.push(buf));
      const { contentType, items } = await readWith(fast.url, 'json-seq', query, parser);
      assert.equal(contentType, 'application/json-seq');
      assert.deepEqual(damaged, []);
      assert.equal(items.map((item) => item.piece).join(''), query);
    });
  });
}
