// GET /events against clients that reconnect by themselves: the npm `eventsource` package,
// @microsoft/fetch-event-source and Chromium's native EventSource. The server ends every
// response after a few events (`limit`) and asks for a reconnection delay longer than the
// feed's interval (`retry_ms`), so every reconnection must replay the events published while
// the client was away. What each client receives must be the feed itself: consecutive ids,
// no gap, no duplicate.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import { chromium } from 'playwright-core';

import { EXAMPLES, startExample } from '../support.js';

// fetch-event-source reads browser globals; support.js sets them up before loading it.
const { fetchEventSource } = await import('@microsoft/fetch-event-source');

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const INTERVAL_MS = 20;
const LIMIT = 5;
const RETRY_MS = 100; // five ticks published during each reconnection
const WANTED = 40; // messages per client: eight connections
const TIMEOUT_MS = 20_000;

/**
 * Checks what a client received: one entry per message, with the id it carried
 * (`lastEventId`) and its data.
 */
function assertConsecutive(messages, client) {
  assert.equal(messages.length, WANTED, client);
  const ids = messages.map((m) => Number(m.id));
  const first = ids[0];
  assert.ok(Number.isInteger(first) && first >= 1, `${client}: first id ${messages[0].id}`);
  assert.deepEqual(ids, ids.map((_, i) => first + i), `${client}: a gap or a duplicate`);
  for (const { id, data } of messages) {
    // The feed's tick number is its id: the data is the event the id names.
    assert.equal(JSON.parse(data).tick, Number(id), `${client}: data of event ${id}`);
  }
}

/** Rejects after `ms`, so that a client that stops receiving fails the test. */
function deadline(ms, what) {
  let timer;
  const promise = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return { promise, clear: () => clearTimeout(timer) };
}

async function withDeadline(what, run) {
  const limit = deadline(TIMEOUT_MS, what);
  try {
    return await Promise.race([run(), limit.promise]);
  } finally {
    limit.clear();
  }
}

const feedPath = `/events?limit=${LIMIT}&retry_ms=${RETRY_MS}`;

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
});

after(async () => {
  await browser?.close();
});

for (const name of EXAMPLES) {
  describe(`${name} /events`, () => {
    let server;

    before(async () => {
      server = await startExample(name, { env: { EVENTS_INTERVAL_MS: INTERVAL_MS } });
    });
    after(async () => {
      await server?.stop();
    });

    test('npm eventsource: reconnects with Last-Event-ID and misses nothing', async () => {
      const messages = [];
      let opens = 0;
      const source = new EventSource(new URL(feedPath, server.url));
      try {
        await withDeadline('eventsource', () => new Promise((resolve, reject) => {
          source.addEventListener('open', () => { opens += 1; });
          source.addEventListener('resync', (event) => {
            reject(new Error(`resync after ${messages.at(-1)?.id}: ${event.data}`));
          });
          source.addEventListener('message', (event) => {
            messages.push({ id: event.lastEventId, data: event.data });
            if (messages.length === WANTED) resolve();
          });
        }));
      } finally {
        source.close();
      }
      assertConsecutive(messages, 'eventsource');
      assert.ok(opens >= WANTED / LIMIT, `only ${opens} connections`);
    });

    test('fetch-event-source: retries after each clean end and misses nothing', async () => {
      class Ended extends Error {}
      const messages = [];
      let opens = 0;
      const abort = new AbortController();
      try {
        await withDeadline('fetch-event-source', () => new Promise((resolve, reject) => {
          fetchEventSource(new URL(feedPath, server.url).href, {
            signal: abort.signal,
            openWhenHidden: true,
            async onopen(response) {
              opens += 1;
              if (response.status !== 200) throw new Error(`status ${response.status}`);
            },
            onmessage(message) {
              // fetch-event-source hands over the retry-only event as an empty message.
              if (message.id === '' && message.data === '') return;
              if (message.event === 'resync') {
                reject(new Error(`resync after ${messages.at(-1)?.id}: ${message.data}`));
                return;
              }
              messages.push({ id: message.id, data: message.data });
              if (messages.length === WANTED) resolve();
            },
            // A clean end: reconnect, as an EventSource would. fetch-event-source sends the
            // id of the last message it got as Last-Event-ID.
            onclose() {
              throw new Ended();
            },
            onerror(error) {
              if (error instanceof Ended) return RETRY_MS;
              throw error;
            },
          }).catch(reject);
        }));
      } finally {
        abort.abort();
      }
      assertConsecutive(messages, 'fetch-event-source');
      assert.ok(opens >= WANTED / LIMIT, `only ${opens} connections`);
    });

    test('Chromium EventSource: reconnects with Last-Event-ID and misses nothing', async (t) => {
      const context = await browser.newContext();
      t.after(() => context.close());
      const page = await context.newPage();
      await page.goto(server.url);
      const result = await withDeadline('Chromium', () => page.evaluate(
        ({ path, wanted }) => new Promise((resolve, reject) => {
          const messages = [];
          let opens = 0;
          const source = new EventSource(path);
          source.onopen = () => { opens += 1; };
          source.addEventListener('resync', (event) => {
            source.close();
            reject(new Error(`resync: ${event.data}`));
          });
          source.onmessage = (event) => {
            messages.push({ id: event.lastEventId, data: event.data });
            if (messages.length === wanted) {
              source.close();
              resolve({ messages, opens });
            }
          };
        }),
        { path: feedPath, wanted: WANTED },
      ));
      assertConsecutive(result.messages, 'Chromium');
      assert.ok(result.opens >= WANTED / LIMIT, `only ${result.opens} connections`);
    });

    test('an id it cannot resume after gets a resync notice, then live events', async () => {
      const response = await fetch(new URL('/events?limit=1', server.url), {
        headers: { 'Last-Event-ID': '999999999' },
      });
      assert.equal(response.status, 200);
      const text = await response.text();
      assert.match(text, /^event: resync\ndata: 0\n\n/);
      assert.match(text, /\nid: \d+\n\n$/);
    });

    test('malformed requests get 400 with a JSON error', async () => {
      for (const [path, headers] of [
        ['/events?limit=0', {}],
        ['/events?retry_ms=soon', {}],
        ['/events', { 'Last-Event-ID': 'ab\u00ff' }], // sent as Latin-1: not UTF-8
      ]) {
        const response = await fetch(new URL(path, server.url), { headers });
        assert.equal(response.status, 400, path);
        assert.equal(response.headers.get('content-type'), 'application/json');
        assert.ok((await response.json()).error, path);
      }
    });
  });
}
