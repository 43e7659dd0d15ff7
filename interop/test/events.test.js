// GET /events against clients that reconnect by themselves: the npm `eventsource` package,
// @microsoft/fetch-event-source and Chromium's native EventSource. The server ends every
// response after a few events (`limit`) and asks for a reconnection delay longer than the
// feed's interval (`retry_ms`), so every reconnection must replay the events published while
// the client was away. What each client receives must be the feed itself: consecutive ticks,
// distinct ids, no gap, no duplicate. The same checks run against each example alone (the feed
// in memory), and against both examples sharing one Redis behind an address that sends every
// request to the other process in turn, so that every reconnection resumes on the other one.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import { chromium } from 'playwright-core';

import {
  EXAMPLES, redisAvailable, startAlternatingProxy, startExample, startRedis,
} from '../support.js';

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
  // The feed's ticks count up by one: whatever the ids look like, the data tells the order.
  const ticks = messages.map((m) => JSON.parse(m.data).tick);
  const first = ticks[0];
  assert.ok(Number.isInteger(first) && first >= 1, `${client}: first tick ${first}`);
  assert.deepEqual(ticks, ticks.map((_, i) => first + i), `${client}: a gap or a duplicate`);
  const ids = messages.map((m) => m.id);
  assert.ok(ids.every((id) => /^[0-9a-f]+-[0-9-]+$/.test(id)), `${client}: ids ${ids}`);
  assert.equal(new Set(ids).size, ids.length, `${client}: an id came twice`);
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

/**
 * The /events checks against the feed that `start()` serves: it resolves with `url` (where
 * clients connect), `stop()`, and `otherRun()`, which starts another run of the server (a new
 * log) and resolves with its URL and `stop()`.
 */
function feedChecks(label, start, options = {}) {
  describe(label, options, () => {
    let server;

    before(async () => {
      server = await start();
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
      for (const process of server.servers ?? []) {
        // Each process served reconnections that resumed what the other one had sent.
        const resumed = process.matching(/streaming \/events.*last_event_id=/);
        assert.ok(resumed.length >= 2, `${process.name} resumed ${resumed.length} streams`);
      }
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
      const unknown = ['999999999', '00000000-5', '00000000-5-0'];
      if (server.otherRun) {
        // An id of another run of the server: its log had another epoch.
        const other = await server.otherRun();
        try {
          const text = await (await fetch(new URL('/events?limit=1', other.url))).text();
          unknown.push(text.match(/\nid: ([^\n]+)\n\n$/)[1]);
        } finally {
          await other.stop();
        }
      }
      for (const id of unknown) {
        const response = await fetch(new URL('/events?limit=2', server.url), {
          headers: { 'Last-Event-ID': id },
        });
        assert.equal(response.status, 200);
        const text = await response.text();
        assert.match(text, /^event: resync\ndata: 0\n\n/, id);
        assert.match(text, /\nid: [0-9a-f]+-[0-9-]+\n\n$/, id);
      }
    });

    test('an id REDIS_MAXLEN trimmed away gets the resync notice', async (t) => {
      if (!server.maxlen) {
        t.skip('the feed is in memory');
        return;
      }
      const first = await (await fetch(new URL('/events?limit=1', server.url))).text();
      const id = first.match(/\nid: ([^\n]+)\n\n$/)[1];
      // Approximate trimming drops whole nodes of 100 entries: wait for a few of them.
      await new Promise((resolve) => setTimeout(resolve, (3 * 100 + server.maxlen) * INTERVAL_MS));
      const response = await fetch(new URL('/events?limit=2', server.url), {
        headers: { 'Last-Event-ID': id },
      });
      assert.equal(response.status, 200);
      assert.match(await response.text(), /^event: resync\ndata: 0\n\n/);
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

for (const name of EXAMPLES) {
  const start = async () => {
    const server = await startExample(name, { env: { EVENTS_INTERVAL_MS: INTERVAL_MS } });
    server.otherRun = () => startExample(name, { env: { EVENTS_INTERVAL_MS: INTERVAL_MS } });
    return server;
  };
  feedChecks(`${name} /events`, start);
}

// Both examples on one Redis: one feed, whichever process a request reaches.
const REDIS_MAXLEN = 20;
feedChecks('/events from Redis: axum and hyper processes in turn', async () => {
  const redis = await startRedis();
  const env = { EVENTS_INTERVAL_MS: INTERVAL_MS, REDIS_URL: redis.url, REDIS_MAXLEN };
  const servers = [];
  try {
    for (const name of EXAMPLES) servers.push(await startExample(name, { env }));
    const proxy = await startAlternatingProxy(servers.map((server) => server.url));
    return {
      url: proxy.url,
      servers,
      maxlen: REDIS_MAXLEN,
      otherRun: null,
      async stop() {
        await proxy.close();
        for (const server of servers) await server.stop();
        await redis.stop();
      },
    };
  } catch (error) {
    for (const server of servers) await server.stop();
    await redis.stop();
    throw error;
  }
}, { skip: !redisAvailable() });
