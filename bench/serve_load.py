"""Load on `sage-nano serve`: N concurrent clients for a fixed time, on loopback only.

Each client loops: POST /v1/explain on a held-out question (arithmetic, linear equation, multiple choice and
logic items in turn), then, when the report has a decision point, POST /v1/compare on it. A 503 (queue full) is
the server's intended answer to overload and is counted apart; every other non-2xx is an error. Prints requests
completed, errors, 503s, p50/p99 latency per endpoint and the server's resident memory (from /healthz) after a
warm-up and at the end. Goals: 0 errors besides the 503s; memory growth <= 10 %.

Run:  .venv/bin/python bench/serve_load.py [--clients 4] [--seconds 60] [--queue 8] [--url http://127.0.0.1:PORT]
Without --url it starts `sage-nano serve` (the shipped model, a temporary report store) on a free port.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

from common import print_table, record
from sagenano.data import generate_items

MAX_CLIENTS, MAX_SECONDS = 32, 600
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TASKS = ("arithmetic", "linear_equation", "multiple_choice", "logic")


def questions(n: int = 40) -> list[str]:
    per_task = [generate_items(task, n // len(TASKS), seed=2026, split="heldout") for task in TASKS]
    return [item.question for group in zip(*per_task, strict=True) for item in group]


def start_server(queue: int, time_limit: float, threads: int | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Path(tempfile.mkdtemp(prefix="sagenano-load-")) / "reports.sqlite3"
    command = [str(Path(sys.executable).parent / "sage-nano"), "serve", "--port", str(port), "--store", str(store),
               "--queue", str(queue), "--time-limit", str(time_limit),
               *(["--threads", str(threads)] if threads else [])]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            httpx.get(f"{url}/healthz", timeout=2).raise_for_status()
            return process, url
        except httpx.HTTPError:
            if process.poll() is not None:
                raise SystemExit("the server exited while starting; run `sage-nano serve` by hand to see why") from None
            time.sleep(0.5)
    process.terminate()
    raise SystemExit("the server did not answer /healthz within 120 s")


class Tally:
    """Latencies and outcomes, per endpoint, shared by the client threads; the server's memory over time."""

    def __init__(self) -> None:
        self.memory: list[float] = []
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {}
        self.status: dict[str, dict[int, int]] = {}
        self.failures: list[str] = []

    def add(self, endpoint: str, status: int, seconds: float, detail: str = "") -> None:
        with self.lock:
            self.status.setdefault(endpoint, {}).setdefault(status, 0)
            self.status[endpoint][status] += 1
            if status == 200:
                self.latency.setdefault(endpoint, []).append(seconds)
            elif status != 503 and len(self.failures) < 10:
                self.failures.append(f"{endpoint} {status}: {detail[:200]}")


def client(url: str, deadline: float, items: itertools.cycle, tally: Tally, lock: threading.Lock) -> None:
    with httpx.Client(base_url=url, timeout=300) as http:
        while time.monotonic() < deadline:
            with lock:
                question = next(items)
            report = call(http, tally, "/v1/explain", {"question": question, "depth": "novice"})
            if report and report["report"]["decision_points"] and time.monotonic() < deadline:
                position = report["report"]["decision_points"][0]["position"]
                call(http, tally, "/v1/compare", {"report_id": report["id"], "position": position})


def sample_memory(url: str, deadline: float, tally: Tally, every: float = 5.0) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, TypeError):
            tally.memory.append(httpx.get(f"{url}/healthz", timeout=30).json()["memory_mb"])
        time.sleep(every)


def call(http: httpx.Client, tally: Tally, endpoint: str, body: dict) -> dict | None:
    start = time.perf_counter()
    try:
        response = http.post(endpoint, json=body)
    except httpx.HTTPError as error:
        tally.add(endpoint, 0, time.perf_counter() - start, repr(error))
        return None
    tally.add(endpoint, response.status_code, time.perf_counter() - start, response.text)
    if response.status_code == 503:
        time.sleep(min(float(response.headers.get("retry-after", 1)), 5))
    return response.json() if response.status_code == 200 else None


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help=f"concurrent clients (1..{MAX_CLIENTS})")
    parser.add_argument("--seconds", type=float, default=60, help=f"duration of the load (up to {MAX_SECONDS})")
    parser.add_argument("--queue", type=int, default=8, help="the started server's --queue")
    parser.add_argument("--time-limit", type=float, default=120, help="the started server's --time-limit")
    parser.add_argument("--threads", type=int, help="the started server's --threads (default: one per core)")
    parser.add_argument("--url", help="a running server on loopback (default: start one)")
    parser.add_argument("--warmup", type=float, default=20, help="seconds of one client before measuring")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--clients must be in 1..{MAX_CLIENTS} and --seconds in (0, {MAX_SECONDS}]")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        parser.error("--url must point at this machine (127.0.0.1, localhost or ::1): this is a load test")
    process, url = (None, args.url) if args.url else start_server(args.queue, args.time_limit, args.threads)
    try:
        run(url, args)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


def run(url: str, args: argparse.Namespace) -> None:
    items = itertools.cycle(questions())
    lock = threading.Lock()
    # warm-up, as the clients will load it (explain, then compare): first-call costs must not count as growth
    client(url, time.monotonic() + args.warmup, items, Tally(), lock)
    before = httpx.get(f"{url}/healthz", timeout=30).json()
    tally = Tally()
    deadline = time.monotonic() + args.seconds
    memory = threading.Thread(target=sample_memory, args=(url, deadline, tally), daemon=True)
    memory.start()
    threads = [threading.Thread(target=client, args=(url, deadline, items, tally, lock)) for _ in range(args.clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    after = httpx.get(f"{url}/healthz", timeout=30).json()
    report(tally, before, after, elapsed, args)


def report(tally: Tally, before: dict, after: dict, elapsed: float, args: argparse.Namespace) -> None:
    rows = []
    for endpoint, counts in sorted(tally.status.items()):
        latency = sorted(tally.latency.get(endpoint, []))
        errors = sum(n for status, n in counts.items() if status not in (200, 503))
        rows.append([endpoint, counts.get(200, 0), counts.get(503, 0), errors,
                     f"{percentile(latency, 50):.2f}" if latency else "-",
                     f"{percentile(latency, 99):.2f}" if latency else "-"])  # fmt: skip
    print(f"{args.clients} clients for {elapsed:.0f} s (queue {args.queue}); cpu count {os.cpu_count()}")
    print_table(["endpoint", "completed", "503 (intended)", "errors", "p50 s", "p99 s"], rows)
    completed = sum(r[1] for r in rows)
    errors = sum(r[3] for r in rows)
    growth = None
    if before.get("memory_mb") and after.get("memory_mb"):
        growth = after["memory_mb"] / before["memory_mb"] - 1
    print(f"completed {completed} ({completed / elapsed:.2f}/s), errors {errors}")
    if growth is not None:
        print(f"server memory {before['memory_mb']:.0f} MiB after warm-up -> {after['memory_mb']:.0f} MiB at the end "
              f"({growth:+.1%})")  # fmt: skip
    if tally.memory:
        print("server memory every 5 s (MiB): " + " ".join(f"{m:.0f}" for m in tally.memory))
    print(f"goal errors == 0: {'met' if errors == 0 else 'NOT met'}")
    record("serve_load", f"errors besides intended 503s ({args.clients} clients)", errors, "== 0",
           "PASS" if errors == 0 else "FAIL")  # fmt: skip
    for row in rows:
        record("serve_load", f"{row[0]}: p50 / p99 latency (s)", f"{row[4]} / {row[5]}")
    if growth is not None:
        record("serve_load", "server memory end / after warm-up", round(1 + growth, 3), "<= 1.10",
               "PASS" if growth <= 0.10 else "FAIL")  # fmt: skip
        print(f"goal memory growth <= 10 %: {'met' if growth <= 0.10 else 'NOT met'}")
    for failure in tally.failures:
        print("  error:", failure)


if __name__ == "__main__":
    main()
