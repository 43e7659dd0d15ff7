"""Starts the examples for the Python SDK tests: each test module gets, per example, a fast
server and one paced like a model (with short keep-alives), on free ports, stopped at the end.
"""

import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = Path(os.environ.get("EXAMPLES_DIR", ROOT / "target" / "debug" / "examples"))
EXAMPLES = ["gpt_stream_axum", "gpt_stream_hyper"]
PACED_DELAY_MS = 100

#: Answers that SDKs or encoders get wrong: spaces that start a token, blank lines, CJK,
#: emoji and graphemes the model splits across chunks, JSON and SSE lookalikes.
HARD_QUERIES = {
    "ascii": "Hello, world!",
    "leading spaces": "   three leading spaces, two trailing  ",
    "blank lines": "first\n\nsecond\n\n",
    "crlf": "windows\r\nline\r\n",
    "cjk": "中文字符，日本語のテキスト、한국어 문장입니다。",
    "emoji": "emoji 😀🎉🚀 family 👨‍👩‍👧‍👦 flag 🇫🇷",
    "combining": "cafe\u0301 na\u0308ive",
    "lookalikes": 'data: [DONE]\n\nevent: error\n: comment {"error": 1}',
}


def post_raw(server, path, body, headers=None):
    """POSTs `body` as JSON with the standard library: (status, headers, text), the exact wire
    bytes the SDKs decode."""
    request = urllib.request.Request(
        f"{server.url}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


class Example:
    """A running example: its URL and its log lines."""

    def __init__(self, name, env):
        binary = EXAMPLES_DIR / name
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: build it first (interop/python/run.sh does)")
        child_env = {k: v for k, v in os.environ.items()
                     if k not in ("PORT", "ALLOWED_ORIGINS", "GPT_DELAY_MS", "KEEP_ALIVE_MS")}
        child_env.update({"RUST_LOG": "info", "NO_COLOR": "1", **env})
        self.name = name
        self.lines = []
        self.changed = threading.Condition()
        self.process = subprocess.Popen(
            [str(binary), "--port", "0"], env=child_env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for_log(r"listening on (http://127\.0\.0\.1:\d+)", 10).group(1)

    def _read(self):
        for line in self.process.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for_log(self, pattern, timeout, start=0):
        """The match of the first log line from index `start` on that matches `pattern`."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self.changed:
            while True:
                for line in self.lines[start:]:
                    if match := regex.search(line):
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    log = "\n".join(f"  | {line}" for line in self.lines)
                    raise AssertionError(f"{self.name} did not log {pattern!r}:\n{log}")
                self.changed.wait(min(left, 0.1))

    def generation_stopped(self, why, start):
        """(sent, total) from the `stopped generating: <why>` line logged after `start`."""
        match = self.wait_for_log(rf"stopped generating: .*{why}.*sent=(\d+) total=(\d+)", 3, start)
        return int(match.group(1)), int(match.group(2))

    def stop(self):
        """Stops the process this fixture started, by its own handle."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="module", params=EXAMPLES)
def servers(request):
    """(fast, paced) servers of one example."""
    fast = Example(request.param, {"GPT_DELAY_MS": "1"})
    paced = Example(request.param, {"GPT_DELAY_MS": str(PACED_DELAY_MS), "KEEP_ALIVE_MS": "20"})
    yield fast, paced
    fast.stop()
    paced.stop()


@pytest.fixture
def fast(servers):
    return servers[0]


@pytest.fixture
def paced(servers):
    return servers[1]
