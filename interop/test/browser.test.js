// The example page in headless Chromium, against both examples: a query typed into the page
// appears progressively and exactly and is "Done." only after the final `event: done`, a
// stream cut short (the server shutting down on SIGINT, or killed) shows as interrupted, Stop
// aborts the request and the server stops generating, the page loads with no failed request
// (its favicon included), and the API can be called from a page on another origin only when
// that origin is allowed.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

import { EXAMPLES, startExample } from '../support.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const DELAY_MS = 20;

// What a person might type: spaces, line breaks, CJK, emoji and multi-code-point graphemes.
// (A textarea turns CRLF into LF, so CRLF is covered by the Node tests.)
const QUERY = '  Hi!\nSSE 中文 日本語 😀\n\nfamily 👨‍👩‍👧‍👦 flag 🇯🇵 cafe\u0301 done ';

let browser;

before(async () => {
  // launch() gives every run a fresh, temporary profile (user data dir).
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
});

after(async () => {
  await browser?.close();
});

/** A fresh page on `url`, failing the test on any script error in it. */
async function openPage(t, url) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  t.after(() => assert.deepEqual(errors, [], 'errors in the page'));
  await page.goto(url);
  return page;
}

/** Records every change of #gpt-output's text as [ms since recording began, text length]. */
function recordOutput(page) {
  return page.evaluate(() => {
    const output = document.getElementById('gpt-output');
    const started = performance.now();
    window.outputChanges = [];
    new MutationObserver(() => {
      window.outputChanges.push([performance.now() - started, output.textContent.length]);
    }).observe(output, { childList: true, characterData: true, subtree: true });
  });
}

for (const name of EXAMPLES) {
  describe(name, () => {
    let server;

    before(async () => {
      server = await startExample(name, { env: { GPT_DELAY_MS: DELAY_MS } });
    });
    after(async () => {
      await server?.stop();
    });

    test('the answer appears progressively and exactly', async (t) => {
      const page = await openPage(t, server.url);
      await page.locator('#query').fill(QUERY);
      await recordOutput(page);
      await page.locator('#send').click();
      await page.locator('#status[data-state="done"]').waitFor({ timeout: 10_000 });

      assert.equal(await page.locator('#gpt-output').textContent(), QUERY);
      const changes = await page.evaluate(() => window.outputChanges);
      const pieces = [...QUERY].length;
      // One change per piece at most; most pieces should be seen one by one, not in a lump.
      assert.ok(changes.length >= pieces / 2, `${changes.length} changes for ${pieces} pieces`);
      for (let i = 1; i < changes.length; i++) {
        assert.ok(changes[i][1] > changes[i - 1][1], 'the text only grows');
      }
      const first = changes[0][0];
      const last = changes.at(-1)[0];
      assert.ok(last - first >= (pieces - 1) * DELAY_MS * 0.8, `spread over ${last - first} ms`);
      assert.ok(first < last / 4, `first text after ${first} ms, last after ${last} ms`);
    });

    test('the page loads with no failed request and says what the echo is', async (t) => {
      const context = await browser.newContext();
      t.after(() => context.close());
      const page = await context.newPage();
      const failures = [];
      page.on('console', (message) => {
        if (message.type() === 'error') failures.push(`console: ${message.text()}`);
      });
      page.on('requestfailed', (request) => failures.push(`failed: ${request.url()}`));
      page.on('response', (response) => {
        if (response.status() >= 400) failures.push(`${response.status()}: ${response.url()}`);
      });
      await page.goto(server.url);
      // The favicon is fetched after the load event; give it the time to be asked for.
      const favicon = await page.waitForResponse((r) => r.url().endsWith('/favicon.svg'), { timeout: 5_000 });
      assert.equal(favicon.status(), 200);
      assert.equal(favicon.headers()['content-type'], 'image/svg+xml');
      await page.waitForTimeout(200);
      assert.deepEqual(failures, []);
      assert.match(await page.locator('#echo-note').textContent(), /echo/);
    });

    for (const [how, signal, why] of [
      ['the server shutting down (SIGINT)', 'SIGINT', /shutting down/],
      ['the server dying (SIGKILL)', 'SIGKILL', /Interrupted/],
    ]) {
      test(`an answer cut short by ${how} shows as interrupted, never Done`, async (t) => {
        const own = await startExample(name, { env: { GPT_DELAY_MS: DELAY_MS } });
        t.after(() => own.stop());
        const page = await openPage(t, own.url);
        const query = 'w'.repeat(300); // 6 s of answer
        await page.locator('#query').fill(query);
        await page.locator('#send').click();
        await page.waitForFunction(
          () => document.getElementById('gpt-output').textContent.length >= 10);
        own.child.kill(signal);
        await page.locator('#status[data-state="interrupted"]').waitFor({ timeout: 5_000 });
        assert.match(await page.locator('#status').textContent(), why);
        const shown = (await page.locator('#gpt-output').textContent()).length;
        assert.ok(shown >= 10 && shown < query.length, `${shown} of ${query.length} shown`);
        // It stays interrupted: nothing later turns it into "Done.".
        await page.waitForTimeout(5 * DELAY_MS);
        assert.equal(await page.locator('#status').getAttribute('data-state'), 'interrupted');
        assert.ok(await page.locator('#send').isEnabled());
      });
    }

    test('Stop aborts the request and the server stops generating', async (t) => {
      const page = await openPage(t, server.url);
      const query = 'z'.repeat(300); // 6 s of answer
      await page.locator('#query').fill(query);
      const logFrom = server.lines.length;
      await page.locator('#send').click();
      await page.waitForFunction(
        () => document.getElementById('gpt-output').textContent.length >= 10);
      await page.locator('#stop').click();

      const [, sent, total] = await server.waitForLog(
        /stopped generating: .*the client disconnected.*sent=(\d+) total=(\d+)/, 2_000, logFrom);
      assert.equal(Number(total), 300);
      assert.ok(Number(sent) < 40, `the model went on to piece ${sent}`);
      assert.equal(await page.locator('#status').getAttribute('data-state'), 'stopped');
      const shown = (await page.locator('#gpt-output').textContent()).length;
      assert.ok(shown >= 10 && shown <= Number(sent), `${shown} shown, ${sent} sent`);
      await page.waitForTimeout(5 * DELAY_MS);
      assert.equal((await page.locator('#gpt-output').textContent()).length, shown);
      assert.ok(await page.locator('#send').isEnabled());
    });

    test('a page on another origin may call the API only when its origin is allowed', async (t) => {
      // The page's origin is http://127.0.0.1:<server port>; these APIs listen on other ports.
      const origin = new URL(server.url).origin;
      const allowing = await startExample(name, { env: { ALLOWED_ORIGINS: origin, GPT_DELAY_MS: 1 } });
      t.after(() => allowing.stop());
      const refusing = await startExample(name, { env: { GPT_DELAY_MS: 1 } });
      t.after(() => refusing.stop());

      const page = await openPage(t, server.url);
      const ask = (api) => page.evaluate(async (url) => {
        const { fetchEventSource } = await import('/fetch-event-source/index.js');
        let text = '';
        let done = false;
        try {
          await fetchEventSource(url, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', 'Last-Event-ID': '7' },
            body: JSON.stringify({ query: 'from afar ✈️' }),
            openWhenHidden: true,
            onmessage(ev) {
              if (ev.event === 'done') done = true;
              else text += JSON.parse(ev.data);
            },
            onerror(error) { throw error; },
          });
          return { text, done };
        } catch (error) {
          return { error: String(error) };
        }
      }, new URL('/gpt-stream', api.url).href);

      assert.deepEqual(await ask(allowing), { text: 'from afar ✈️', done: true });
      const refused = await ask(refusing);
      assert.match(refused.error ?? '', /TypeError|Failed to fetch/);
      // The preflight failed, so the POST was never sent and no answer was started.
      assert.equal(refusing.matching(/streaming an answer/).length, 0);
    });
  });
}
