// The article's own client, @microsoft/fetch-event-source, under Node against both examples:
// every character arrives, nothing is buffered, bad input is refused before any stream starts,
// the server stops generating when the client leaves, and CORS lets only allowed origins in.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import {
  EXAMPLES, HARD_QUERIES, ROOT, sleep, startExample, streamAnswer,
} from '../support.js';

const ALLOWED_ORIGIN = 'http://allowed.example';

for (const name of EXAMPLES) {
  describe(name, () => {
    // A server that streams fast (correctness), one with no delay at all (coalescing), and
    // one paced like a model (timing, aborts).
    let fast;
    let instant;
    let paced;
    const PACED_DELAY_MS = 40;

    before(async () => {
      [fast, instant, paced] = await Promise.all([
        startExample(name, { env: { GPT_DELAY_MS: 1, ALLOWED_ORIGINS: ALLOWED_ORIGIN } }),
        startExample(name, { env: { GPT_DELAY_MS: 0 } }),
        startExample(name, { env: { GPT_DELAY_MS: PACED_DELAY_MS } }),
      ]);
    });
    after(async () => {
      await Promise.all([fast?.stop(), instant?.stop(), paced?.stop()]);
    });

    for (const [label, query] of Object.entries(HARD_QUERIES)) {
      test(`every character arrives exactly: ${label}`, async () => {
        const result = await streamAnswer(fast.url, query);
        assert.equal(result.status, 200);
        assert.equal(result.contentType, 'text/event-stream');
        assert.equal(result.closed, true, 'the stream ended cleanly (onclose)');
        assert.equal(result.text, query);
        // One message per piece: no empty messages from keep-alives or stray blank lines.
        assert.deepEqual(result.pieces.map((p) => p.piece), [...query]);
      });
    }

    test('a long query of hard characters arrives exactly when events are coalesced', async () => {
      // With no delay the model is far faster than the client, so many events share one
      // chunk and chunks split multi-byte characters at arbitrary points.
      const alphabet = [...Object.values(HARD_QUERIES).join('')];
      let query = '';
      for (let i = 0; query.length < 15_000; i++) query += alphabet[(i * 7919) % alphabet.length];
      assert.ok(Buffer.byteLength(JSON.stringify({ query })) < 64 * 1024);
      const result = await streamAnswer(instant.url, query);
      assert.equal(result.text, query);
      assert.equal(result.pieces.length, [...query].length);
    });

    test('?format=text carries everything through fetch-event-source but line breaks', async () => {
      for (const query of Object.values(HARD_QUERIES)) {
        const result = await streamAnswer(fast.url, query, { format: 'text' });
        assert.equal(result.contentType, 'text/event-stream');
        // Each piece is one character, so a piece that is a line break is a message whose
        // data lines are all empty, which fetch-event-source delivers as "".
        assert.equal(result.text, query.replace(/[\r\n]/g, ''), JSON.stringify(query));
      }
    });

    test('no buffering: the first piece arrives long before the last is sent', async () => {
      const query = 'streamed one piece at a time'; // 28 pieces, one every 40 ms
      const result = await streamAnswer(paced.url, query);
      assert.equal(result.text, query);
      // The headers that keep caches and proxies from holding the stream back.
      assert.equal(result.headers.get('cache-control'), 'no-cache');
      assert.equal(result.headers.get('x-accel-buffering'), 'no');
      // The handler returned at once: the headers came before the model's first piece.
      assert.ok(result.openedAt < PACED_DELAY_MS, `headers after ${result.openedAt} ms`);
      const first = result.pieces[0].at;
      const last = result.pieces.at(-1).at;
      const streaming = (query.length - 1) * PACED_DELAY_MS;
      assert.ok(last >= streaming * 0.9, `the answer took ${last} ms, expected about ${streaming}`);
      assert.ok(first < last / 4, `first piece after ${first} ms, last after ${last} ms`);
      // The pieces arrive spread out, not in a few bursts.
      const halfway = result.pieces.filter((p) => p.at < (first + last) / 2).length;
      assert.ok(halfway >= query.length / 4, `only ${halfway} pieces arrived in the first half`);
    });

    test('the server stops generating as soon as the client aborts', async () => {
      const query = 'x'.repeat(200); // 8 s of answer at 40 ms a piece
      const logFrom = paced.lines.length;
      const controller = new AbortController();
      let abortedAt = 0;
      const result = await streamAnswer(paced.url, query, {
        signal: controller.signal,
        onPiece(sofar) {
          if (sofar.pieces.length === 5) {
            abortedAt = performance.now();
            controller.abort();
          }
        },
      });
      assert.equal(result.closed, false);
      const [, sent, total] = await paced.waitForLog(
        /stopped generating: .*the client disconnected.*sent=(\d+) total=(\d+)/, 2_000, logFrom);
      const noticedAfter = performance.now() - abortedAt;
      assert.equal(Number(total), 200);
      assert.ok(Number(sent) <= 5 + 3, `the model sent ${sent} pieces after the client left at 5`);
      assert.ok(noticedAfter < 1_000, `noticed after ${noticedAfter} ms`);
      await sleep(3 * PACED_DELAY_MS);
      assert.equal(paced.matching(/answer complete total=200/).length, 0);
    });

    describe('bad input gets its status and a JSON error, and never a stream', () => {
      const json = { 'Content-Type': 'application/json' };
      const big = JSON.stringify({ query: 'x'.repeat(64 * 1024) });
      const cases = [
        ['invalid JSON', 400, { method: 'POST', headers: json, body: '{"query": ' }],
        ['not JSON at all', 400, { method: 'POST', headers: json, body: 'query=hello' }],
        ['an empty body', 400, { method: 'POST', headers: json, body: '' }],
        ['no query', 422, { method: 'POST', headers: json, body: '{"question": "hi"}' }],
        ['a number query', 422, { method: 'POST', headers: json, body: '{"query": 42}' }],
        ['a null query', 422, { method: 'POST', headers: json, body: '{"query": null}' }],
        ['an array body', 422, { method: 'POST', headers: json, body: '["hi"]' }],
        ['a body over 64 KiB', 413, { method: 'POST', headers: json, body: big }],
        ['a chunked body over 64 KiB', 413, {
          method: 'POST', headers: json, duplex: 'half', body: chunked(big),
        }],
        ['a text/plain body', 415, {
          method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: '{"query": "hi"}',
        }],
        ['no content-type', 415, {
          method: 'POST', body: new TextEncoder().encode('{"query": "hi"}'),
        }],
        ['an unknown format', 400, {
          method: 'POST', headers: json, body: '{"query": "hi"}', search: '?format=xml',
        }],
        ['GET', 405, { method: 'GET' }],
        ['PUT', 405, { method: 'PUT', headers: json, body: '{"query": "hi"}' }],
        ['DELETE', 405, { method: 'DELETE' }],
        ['PATCH', 405, { method: 'PATCH', headers: json, body: '{"query": "hi"}' }],
      ];
      for (const [label, status, { search = '', ...init }] of cases) {
        test(`${label} -> ${status}`, async () => {
          const started = fast.matching(/streaming an answer/).length;
          const response = await fetch(new URL(`/gpt-stream${search}`, fast.url), init);
          assert.equal(response.status, status);
          assert.equal(response.headers.get('content-type'), 'application/json');
          const body = await response.json();
          assert.equal(typeof body.error, 'string');
          assert.ok(body.error.length > 0);
          if (status === 405) assert.equal(response.headers.get('allow'), 'POST');
          assert.equal(fast.matching(/streaming an answer/).length, started, 'a stream started');
        });
      }

      test('bodies up to exactly 64 KiB and a charset parameter are accepted', async () => {
        const query = 'y'.repeat(64 * 1024 - '{"query":""}'.length);
        const body = JSON.stringify({ query });
        assert.equal(Buffer.byteLength(body), 64 * 1024);
        const controller = new AbortController();
        const response = await fetch(new URL('/gpt-stream', fast.url), {
          method: 'POST',
          headers: { 'Content-Type': 'Application/JSON; charset=utf-8' },
          body,
          signal: controller.signal,
        });
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('content-type'), 'text/event-stream');
        controller.abort();
      });
    });

    describe('CORS', () => {
      const preflight = (origin) => fetch(new URL('/gpt-stream', fast.url), {
        method: 'OPTIONS',
        headers: {
          Origin: origin,
          'Access-Control-Request-Method': 'POST',
          'Access-Control-Request-Headers': 'content-type,last-event-id',
        },
      });

      test('a preflight from an allowed origin may send Content-Type and Last-Event-ID', async () => {
        const response = await preflight(ALLOWED_ORIGIN);
        assert.ok(response.ok, `status ${response.status}`);
        assert.equal(response.headers.get('access-control-allow-origin'), ALLOWED_ORIGIN);
        const methods = response.headers.get('access-control-allow-methods') ?? '';
        assert.match(methods, /\bPOST\b/);
        const allowed = (response.headers.get('access-control-allow-headers') ?? '')
          .toLowerCase().split(',').map((h) => h.trim());
        assert.ok(allowed.includes('content-type'), allowed.join());
        assert.ok(allowed.includes('last-event-id'), allowed.join());
      });

      test('other origins are not allowed', async () => {
        const response = await preflight('http://elsewhere.example');
        assert.equal(response.headers.get('access-control-allow-origin'), null);
      });

      test('the stream itself carries the allow-origin header', async () => {
        const result = await streamAnswer(fast.url, 'hi', { headers: { Origin: ALLOWED_ORIGIN } });
        assert.equal(result.text, 'hi');
        assert.equal(result.headers.get('access-control-allow-origin'), ALLOWED_ORIGIN);
      });
    });

    test('GET / serves the page and the client library it imports', async () => {
      const page = await fetch(new URL('/', fast.url));
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type'), /^text\/html/);
      const html = await page.text();
      for (const id of ['query', 'send', 'stop', 'gpt-output']) {
        assert.match(html, new RegExp(`id="${id}"`));
      }
      assert.match(html, /from '\/fetch-event-source\/index\.js'/);
      for (const [url, file] of [
        ['/fetch-event-source/index.js', 'index.js'],
        ['/fetch-event-source/fetch', 'fetch.js'],
        ['/fetch-event-source/parse', 'parse.js'],
      ]) {
        const response = await fetch(new URL(url, fast.url));
        assert.equal(response.status, 200, url);
        assert.match(response.headers.get('content-type'), /^text\/javascript/);
        const vendored = readFileSync(path.join(ROOT, 'examples/page/fetch-event-source', file), 'utf8');
        assert.equal(await response.text(), vendored);
      }
      const missing = await fetch(new URL('/nope', fast.url));
      assert.equal(missing.status, 404);
      assert.equal(typeof (await missing.json()).error, 'string');
    });
  });
}

test('the page uses an unmodified copy of the pinned npm package', () => {
  const npmDir = path.join(ROOT, 'interop/node_modules/@microsoft/fetch-event-source');
  const { version } = JSON.parse(readFileSync(path.join(npmDir, 'package.json'), 'utf8'));
  for (const file of ['index.js', 'fetch.js', 'parse.js']) {
    const vendored = readFileSync(path.join(ROOT, 'examples/page/fetch-event-source', file), 'utf8');
    const [header, rest] = splitHeader(vendored);
    assert.match(header, new RegExp(`@microsoft/fetch-event-source ${version.replace(/\./g, '\\.')} `));
    assert.match(header, /MIT License/);
    assert.equal(rest, readFileSync(path.join(npmDir, 'lib/esm', file), 'utf8'), file);
  }
  assert.equal(
    readFileSync(path.join(ROOT, 'examples/page/fetch-event-source/LICENSE'), 'utf8'),
    readFileSync(path.join(npmDir, 'LICENSE'), 'utf8'),
  );
});

for (const name of EXAMPLES) {
  test(`${name}: Ctrl-C ends open streams cleanly and the server exits`, async () => {
    const server = await startExample(name, { env: { GPT_DELAY_MS: 40 } });
    const query = 'y'.repeat(200);
    let interruptedAt = 0;
    try {
      const result = await streamAnswer(server.url, query, {
        onPiece(sofar) {
          if (sofar.pieces.length === 3) {
            interruptedAt = performance.now();
            server.interrupt();
          }
        },
      });
      assert.equal(result.closed, true, 'a clean end (onclose), not an error');
      assert.ok(query.startsWith(result.text) && result.text.length < query.length);
      const code = await Promise.race([server.exited, sleep(2_000).then(() => 'still running')]);
      assert.equal(code, 0);
      assert.ok(performance.now() - interruptedAt < 1_000);
    } finally {
      await server.stop();
    }
  });
}

describe('port configuration', () => {
  const name = EXAMPLES[0];

  test('--port wins over PORT', async () => {
    const server = await startExample(name, { env: { PORT: 'not-a-port' }, args: ['--port=0'] });
    await server.stop();
  });

  test('PORT alone is used', async () => {
    const server = await startExample(name, { env: { PORT: 0 }, args: [] });
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    await server.stop();
  });

  test('a bad PORT is refused with a message', async () => {
    await assert.rejects(
      startExample(name, { env: { PORT: '70000' }, args: [] }),
      /exited \(2\)[^]*port "70000"/,
    );
  });
});

/** `text` as a stream of small chunks, so fetch sends it without a Content-Length. */
function chunked(text) {
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.subarray(offset, offset + 8192));
      offset += 8192;
    },
  });
}

function splitHeader(text) {
  const end = text.indexOf('*/\n') + 3;
  return [text.slice(0, end), text.slice(end)];
}
