"""A runner in a process of its own, driven over a pipe.

Some comparators run slower when they share a process with Numba or PyTorch
(their thread pools compete; see the OpenMP trap in bench/RESULTS.md), so they
can run in a worker: a fresh interpreter (``python -m handprop.bench.worker``)
that builds the runner from its kind and arguments and answers ``warmup``,
``run`` and ``batch_losses`` with the runner's own results, one JSON line per
request. The clock is read inside the worker, so the pipe is not timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback

from .runners import Runner

#: runner kind -> (module, class) a worker may build; nothing else is imported.
KINDS = {"jax": ("handprop.bench.jax_runner", "JaxRunner"),
         "torch": ("handprop.bench.torch_runner", "TorchRunner")}
METHODS = ("warmup", "epochs", "run", "batch_losses")


def serve(requests, replies) -> None:
    """Answer requests (JSON lines) until ``close`` or end of input."""
    import importlib

    def reply(**message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    try:
        spec = json.loads(requests.readline())
        module, name = KINDS[spec["kind"]]
        runner = getattr(importlib.import_module(module), name)(**spec["kwargs"])
    except BaseException:
        return reply(error=traceback.format_exc())
    reply(label=runner.label, batch=runner.batch, steps=runner.steps)
    for line in requests:
        request = json.loads(line)
        if request["method"] == "close":
            return
        try:
            if request["method"] not in METHODS:
                raise ValueError(f"unknown request {request['method']!r}")
            value = getattr(runner, request["method"])(*request["args"])
            reply(value=value, warmup_seconds=runner.warmup_seconds,
                  warmup_epochs=runner.warmup_epochs)
        except BaseException:
            reply(error=traceback.format_exc())


class ProcessRunner(Runner):
    """``KINDS[kind](**kwargs)`` in a worker process, with the runner interface."""

    def __init__(self, kind: str, **kwargs):
        if kind not in KINDS:
            raise ValueError(f"unknown worker kind {kind!r}; known: {', '.join(KINDS)}")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "handprop.bench.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, bufsize=1)
        self._send({"kind": kind, "kwargs": kwargs})
        reply = self._receive()
        self.label, self.batch, self.steps = reply["label"], reply["batch"], reply["steps"]

    def _send(self, message) -> None:
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()

    def _receive(self) -> dict:
        line = self._process.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(f"the benchmark worker died (exit code {self._process.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            self.close()
            raise RuntimeError("the benchmark worker failed:\n" + reply["error"])
        return reply

    def _call(self, method: str, *args):
        self._send({"method": method, "args": list(args)})
        reply = self._receive()
        self.warmup_seconds = reply["warmup_seconds"]
        self.warmup_epochs = reply.get("warmup_epochs")
        return reply["value"]

    def warmup(self, epochs: int = 1) -> None:
        self._call("warmup", epochs)

    def epochs(self, count: int) -> list[float]:
        return self._call("epochs", count)

    def run(self) -> float:
        return self._call("run")

    def batch_losses(self) -> list[float]:
        return self._call("batch_losses")

    def close(self) -> None:
        process = self._process
        if process.poll() is None:
            try:
                self._send({"method": "close"})
                process.stdin.close()
                process.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        for stream in (process.stdin, process.stdout):
            if not stream.closed:
                stream.close()


def main() -> None:
    # The replies own the real stdout; anything a library prints goes to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
