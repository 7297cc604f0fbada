"""Load: wrk runs (throughput, latency, errors) and a Python prober that records which instance
answered each request, with monotonic timestamps, for the propagation measurements."""

import http.client
import json
import os
import subprocess
import threading
import time
from collections import deque

from .procs import HarnessError

LUA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "wrk-report.lua")


def wrk(url, duration_s, connections, threads=1, cpus=None, timeout_s="5s", script=LUA, script_args=()):
    """Runs wrk once; returns the parsed BENCH_RESULT dict (latencies in µs) plus 'errors'. `script`
    must print wrk-report.lua's BENCH_RESULT line (wrk-soak.lua loads it); `script_args` go after `--`."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", f"--timeout", timeout_s, "-s", script, url]
    if script_args:
        argv += ["--", *script_args]
    if cpus:
        argv = ["taskset", "-c", cpus] + argv
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30)
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"wrk did not finish: {' '.join(argv)}") from e
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            r = {}
            for kv in line.split()[1:]:
                k, v = kv.split("=")
                r[k] = float(v)
            r["socket_errors"] = r["connect"] + r["read"] + r["write"] + r["timeout"]
            r["errors"] = r["socket_errors"] + r["status"]
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            return r
    raise HarnessError(f"wrk gave no result ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")


class Workers:
    """Background threads, each running `self._run(k)` (k = 0..threads-1) until the `with` block
    ends: `_stop` is then set and each thread joined for at most `join_timeout` seconds."""

    join_timeout = 5

    def _workers(self, threads):
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.join_timeout)


class Prober(Workers):
    """`threads` keep-alive clients sending GET path continuously; each response is recorded as
    (sent, received, port-that-answered or None, status or error text)."""

    def __init__(self, port, path, threads=4, interval=0.0):
        """interval: seconds each thread waits after a response (0: back to back)."""
        self.port, self.path, self.n, self.interval = port, path, threads, interval
        self.events = deque()  # appended by the client threads, drained by take()
        self.errors = 0
        self.responses = 0
        self._workers(threads)

    def take(self):
        """The events recorded since the last take()."""
        out = []
        while True:
            try:
                out.append(self.events.popleft())
            except IndexError:
                return out

    def _run(self, _k):
        conn = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            ts = time.monotonic()
            try:
                conn.request("GET", self.path)
                r = conn.getresponse()
                body = r.read()
                te = time.monotonic()
                port = None
                if r.status == 200:
                    try:
                        port = json.loads(body).get("port")
                    except ValueError:
                        pass
                else:
                    self.errors += 1
                self.events.append((ts, te, port, r.status))
                self.responses += 1
                if self.interval:
                    self._stop.wait(self.interval)
            except (OSError, http.client.HTTPException) as e:
                self.errors += 1
                self.events.append((ts, time.monotonic(), None, type(e).__name__))
                conn.close()
                conn = None
                time.sleep(max(0.001, self.interval))
        if conn:
            conn.close()


def wait_gone(prober, port, t0, quiet, timeout):
    """After a deregistration returned at t0: the time (s after t0) of the last response from `port`
    (an upper bound of when the gateway last routed there; 0 if none came after t0), once `quiet`
    seconds with at least 50 other responses have passed without one. None on timeout."""
    last = t0
    after_last = 0
    seen = []
    deadline = t0 + timeout
    while True:
        time.sleep(0.005)
        for ev in prober.take():
            seen.append(ev)
            _, te, p, _ = ev
            if te < t0:
                continue
            if p == port:
                last = max(last, te)
                after_last = 0
            elif p is not None and te > last:
                after_last += 1
        now = time.monotonic()
        if now - last >= quiet and after_last >= 50:
            return last - t0, seen
        if now > deadline:
            return None, seen


def wait_first(prober, port, t0, timeout):
    """After a registration returned at t0: seconds until the first response from `port`; None on timeout."""
    seen = []
    deadline = t0 + timeout
    while True:
        time.sleep(0.002)
        for ev in prober.take():
            seen.append(ev)
            _, te, p, _ = ev
            if p == port and te >= t0:
                # Events arrive out of order across threads: take the earliest such.
                first = min(e[1] for e in seen if e[2] == port and e[1] >= t0)
                return first - t0, seen
        if time.monotonic() > deadline:
            return None, seen
