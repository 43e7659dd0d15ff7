"""Starts the example binaries on free ports for the ollama interop tests and reads their logs."""

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = Path(os.environ.get("EXAMPLES_DIR", ROOT / "target" / "debug" / "examples"))
EXAMPLES = ["gpt_stream_axum", "gpt_stream_hyper"]


class Example:
    """A running example: its address and its log lines (stderr)."""

    def __init__(self, name, delay_ms):
        binary = EXAMPLES_DIR / name
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: build it first (interop/ollama/run.sh does)")
        env = {**os.environ, "RUST_LOG": "info", "NO_COLOR": "1", "GPT_DELAY_MS": str(delay_ms)}
        env.pop("PORT", None)
        self.name = name
        self.lines = []
        self.lock = threading.Condition()
        self.process = subprocess.Popen(
            [str(binary), "--port", "0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        match = self.wait_for_log(r"listening on (http://127\.0\.0\.1:\d+)", timeout=10)
        self.url = match.group(1)

    def _read_log(self):
        for line in self.process.stderr:
            with self.lock:
                self.lines.append(line.rstrip("\n"))
                self.lock.notify_all()

    def wait_for_log(self, pattern, timeout, start=0):
        """The match of the first log line from index `start` on that matches `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for line in self.lines[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    log = "\n".join(f"  | {line}" for line in self.lines)
                    raise AssertionError(f"{self.name} did not log {pattern!r}:\n{log}")
                self.lock.wait(min(left, 0.1))

    def stop(self):
        """Stops the process this fixture started (by its own handle, so by its PID)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module", params=EXAMPLES)
def example(request):
    """Each example, streaming fast."""
    server = Example(request.param, delay_ms=1)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=EXAMPLES)
def paced_example(request):
    """Each example, paced like a model (40 ms a piece)."""
    server = Example(request.param, delay_ms=40)
    yield server
    server.stop()
