// Shared by the interop tests: start an example binary on a free port and read its log, and
// stream an answer through @microsoft/fetch-event-source the way the article's page does.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// fetch-event-source is written for browsers: it reads `window.fetch`, `window.setTimeout`
// and `document` (for its hide-on-visibility behaviour, which `openWhenHidden: true` turns
// off, but it still unregisters its listener). Node 20 has everything else it needs.
globalThis.window ??= globalThis;
globalThis.document ??= { hidden: false, addEventListener() {}, removeEventListener() {} };
const { fetchEventSource } = await import('@microsoft/fetch-event-source');

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Where `cargo build --examples` put the binaries (run.sh sets EXAMPLES_DIR). */
export const EXAMPLES_DIR =
  process.env.EXAMPLES_DIR ?? path.join(ROOT, 'target', 'debug', 'examples');

export const EXAMPLES = ['gpt_stream_axum', 'gpt_stream_hyper'];

/**
 * Starts an example with `--port 0` and resolves once it logs the address it bound.
 * `env` adds to (or, with `undefined` values, removes from) the inherited environment.
 */
export async function startExample(name, { env = {}, args = ['--port', '0'] } = {}) {
  const binary = path.join(EXAMPLES_DIR, name);
  if (!existsSync(binary)) {
    throw new Error(`${binary} is missing: build it first (interop/run.sh does)`);
  }
  const childEnv = { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' };
  delete childEnv.PORT;
  delete childEnv.ALLOWED_ORIGINS;
  delete childEnv.GPT_DELAY_MS;
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[key];
    else childEnv[key] = String(value);
  }
  const child = spawn(binary, args, { env: childEnv, stdio: ['ignore', 'ignore', 'pipe'] });
  const server = new ExampleProcess(name, child);
  const [, url] = await server.waitForLog(/listening on (http:\/\/127\.0\.0\.1:\d+)/, 10_000);
  server.url = url;
  return server;
}

/** A running example: its log lines (stderr), and a way to wait for one. */
class ExampleProcess {
  constructor(name, child) {
    this.name = name;
    this.child = child;
    this.url = null;
    this.lines = [];
    this.exitCode = null;
    this.waiters = new Set();
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitCode = code ?? signal;
        for (const waiter of this.waiters) waiter.check();
        resolve(this.exitCode);
      });
    });
    let partial = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop();
      this.lines.push(...parts);
      for (const waiter of this.waiters) waiter.check();
    });
  }

  /** The log lines so far that match `pattern`. */
  matching(pattern) {
    return this.lines.filter((line) => pattern.test(line));
  }

  /**
   * Resolves with the match of the first log line from index `from` on that matches
   * `pattern`; rejects after `timeoutMs` or if the process exits first.
   */
  waitForLog(pattern, timeoutMs, from = 0) {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          for (let i = from; i < this.lines.length; i++) {
            const match = this.lines[i].match(pattern);
            if (match) return finish(() => resolve(match));
          }
          if (this.exitCode !== null) {
            finish(() => reject(new Error(`${this.name} exited (${this.exitCode}) before logging ${pattern}:\n${this.log()}`)));
          }
        },
      };
      const timer = setTimeout(() => {
        finish(() => reject(new Error(`${this.name} did not log ${pattern} within ${timeoutMs} ms:\n${this.log()}`)));
      }, timeoutMs);
      const finish = (settle) => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        settle();
      };
      this.waiters.add(waiter);
      waiter.check();
    });
  }

  log() {
    return this.lines.map((line) => `  | ${line}`).join('\n');
  }

  /** Sends SIGINT, as Ctrl-C in a terminal does. */
  interrupt() {
    this.child.kill('SIGINT');
  }

  /** Stops the process this helper started (by its own handle, so by its PID). */
  async stop() {
    if (this.exitCode === null) {
      this.child.kill('SIGTERM');
      await this.exited;
    }
  }
}

/**
 * POSTs `query` to `/gpt-stream` with fetch-event-source and collects what it delivers.
 * Resolves when the stream ends (`onclose`) or `signal` aborts it; rejects on any error,
 * never retrying. `pieces` holds each message's decoded text and its arrival time in ms
 * after the request was started; `openedAt` is when the response headers arrived; `done`
 * (or `shutdown`) is set when the final event of that name arrived.
 */
export async function streamAnswer(baseUrl, query, { format, signal, onPiece, headers = {} } = {}) {
  const url = new URL('/gpt-stream', baseUrl);
  if (format) url.searchParams.set('format', format);
  const result = {
    status: 0, contentType: null, pieces: [], closed: false, text: '', done: false, shutdown: false,
  };
  const started = performance.now();
  await fetchEventSource(url.href, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify({ query }),
    signal,
    openWhenHidden: true,
    async onopen(response) {
      result.openedAt = performance.now() - started;
      result.status = response.status;
      result.contentType = response.headers.get('content-type');
      result.headers = response.headers;
      if (!response.ok || !result.contentType?.startsWith('text/event-stream')) {
        throw new Error(`not an event stream: ${response.status} ${await response.text()}`);
      }
    },
    onmessage(message) {
      // `done` ends every complete answer, `shutdown` one the server cut short: not pieces.
      if (message.event === 'done' || message.event === 'shutdown') {
        result[message.event] = true;
        return;
      }
      const piece = format === 'text' ? message.data : JSON.parse(message.data);
      result.pieces.push({ piece, at: performance.now() - started, event: message.event });
      result.text += piece;
      onPiece?.(result);
    },
    onclose() {
      result.closed = true;
    },
    onerror(error) {
      throw error; // no retries: a retried POST would ask the model again
    },
  });
  return result;
}

/** Sleeps for `ms` milliseconds. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Queries that each hold characters some client or encoder gets wrong: spaces that lead or
 * trail, line breaks of every kind, text that looks like SSE fields, CJK, emoji, and graphemes
 * made of several code points (which the model splits across events).
 */
export const HARD_QUERIES = {
  'plain ASCII': 'Hello, world!',
  'leading and trailing spaces': '   three leading spaces, two trailing  ',
  'a lone space': ' ',
  'tabs': '\tindented\tby tabs\t',
  'LF line breaks': 'line one\nline two\n\nafter a blank line\n',
  'a leading line break': '\nstarts on the second line',
  'only line breaks': '\n\n\n',
  'CRLF and lone CR': 'windows\r\nline\r\nendings, a lone\rcarriage return\r\n\r\n',
  'SSE field lookalikes': 'data: fake\n\nevent: x\nid: 1\nretry: 0\n: comment\n:',
  'JSON and escapes': '{"query": "nested"} \\ "quotes" \\n not-a-newline \u0000 nul \u2028 \u2029 seps',
  'CJK': '中文字符，日本語のテキスト、한국어 문장입니다。',
  'emoji': 'emoji 😀🎉🚀 outside the BMP',
  'family and flag graphemes': 'family 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵🏳️‍🌈, skin tone 👍🏽',
  'combining marks': 'cafe\u0301 na\u0308ive Z\u0335\u0327a\u0337l\u0338g\u0336o\u0334 \u0915\u094d\u0937',
};

/**
 * POSTs `body` as JSON to `path` with plain fetch and resolves with the status, the headers
 * and the whole response text: the exact wire bytes the SDK tests' clients decode.
 */
export async function postRaw(baseUrl, path, body, headers = {}) {
  const response = await fetch(new URL(path, baseUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

/**
 * Resolves with `{ sent, total }` from the example's `stopped generating: <why>` log line
 * logged after line `from` whose reason matches `why`.
 */
export async function generationStopped(server, why, from, timeoutMs = 3_000) {
  const pattern = new RegExp(`stopped generating: .*${why}.*sent=(\\d+) total=(\\d+)`);
  const [, sent, total] = await server.waitForLog(pattern, timeoutMs, from);
  return { sent: Number(sent), total: Number(total) };
}

/** Debian's redis-server, unless REDIS_SERVER names another binary. */
export const REDIS_SERVER = process.env.REDIS_SERVER ?? '/usr/bin/redis-server';

/**
 * Whether the Redis checks can run: redis-server is installed. In CI a missing one is an
 * error, not a reason to skip.
 */
export function redisAvailable() {
  if (existsSync(REDIS_SERVER)) return true;
  if (process.env.CI) throw new Error(`${REDIS_SERVER} is missing: CI must install redis-server`);
  console.error(`\n!!! SKIPPED: ${REDIS_SERVER} is not installed: the Redis checks did not run !!!\n`);
  return false;
}

/** A port that was free a moment ago. */
async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Whether a Redis answers PING on the port. */
function ping(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setTimeout(1000, () => { socket.destroy(); resolve(false); });
    socket.on('error', () => resolve(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => { socket.destroy(); resolve(data.toString() === '+PONG\r\n'); });
  });
}

/**
 * Starts a redis-server of its own on a free loopback port with its own temp dir; resolves
 * with its `url` and `stop()` (which stops that process, by its handle, and removes the dir).
 */
export async function startRedis() {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tower-sse-interop-redis-'));
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child = spawn(REDIS_SERVER, ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir,
      '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    let running = true;
    exited.then(() => { running = false; });
    for (let i = 0; i < 200 && running; i++) {
      if (await ping(port)) {
        return {
          url: `redis://127.0.0.1:${port}/`,
          async stop() {
            if (running) { child.kill('SIGTERM'); await exited; }
            await rm(dir, { recursive: true, force: true });
          },
        };
      }
      await sleep(50);
    }
    if (running) { child.kill('SIGKILL'); await exited; }
  }
  throw new Error('redis-server did not start on a free port');
}

/**
 * An HTTP proxy on a free loopback port that sends each request to the next of `targets` in
 * turn, so that every reconnection of a client goes to another server. Resolves with its
 * `url`, `requests()` (how many it forwarded) and `close()`.
 */
export async function startAlternatingProxy(targets) {
  let requests = 0;
  const server = http.createServer((request, response) => {
    const target = new URL(targets[requests++ % targets.length]);
    const upstream = http.request({
      host: target.hostname, port: target.port, method: request.method, path: request.url,
      headers: request.headers, agent: false,
    }, (answer) => {
      response.writeHead(answer.statusCode, answer.headers);
      answer.pipe(response);
    });
    upstream.on('error', () => response.destroy());
    response.on('close', () => upstream.destroy());
    request.pipe(upstream);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests: () => requests,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}
