#!/usr/bin/env python3
"""How long updates stall in the gateway when the Consul leader is killed, per consistency mode.

Runs docker-compose.yml (3 Consul servers, a client agent, the gateway) once per mode given with
--modes (default: default,stale,consistent), with GATEWAY_CONSISTENCY set to it. In each run:

- a writer changes one catalog entry every --interval seconds through the client agent
  (`PUT /v1/catalog/register`: service `probe`, tagged `gateway`, one instance whose port is the
  change's sequence number), and records when Consul accepted each write;
- a reader polls the gateway's admin `/services` every 20 ms and records when each port first
  shows;
- after --settle seconds the Raft leader is killed (`docker kill`), and the run goes on for
  --after seconds.

Reported per mode, for the writes Consul accepted after the kill:
- `election`: kill → a new leader listed by `consul operator raft list-peers` (polled every 0.5 s);
- `first write`: kill → the first write Consul accepted again (the cluster's own stall: no write
  commits without a leader);
- `lag p50/max`: accepted → shown by the gateway, for those writes (what the read mode costs);
- `read stall`: kill → the first of those writes shown by the gateway;
- `superseded`: accepted writes the gateway never showed because a later one replaced them before it
  read (a blocking query returns the latest state, not every step); `last shown`: whether the last
  write was (goal: yes);
- `/readyz not ready`: how long, after the kill, the gateway's /readyz said not ready (stale).
And the same lag before the kill, as the baseline.

A measurement, not a test: it reports and asserts nothing. Traffic goes to 127.0.0.1 only (ports
this stack publishes); the stack is taken down on any exit.

Usage: bench/leader_kill.sh [--modes default,stale] [--rounds 1] [--settle 5] [--after 25]
       [--interval 0.2] [--out FILE]   (images as for the container e2e test: scripts/build-images.sh)
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import e2e_docker as e2e  # noqa: E402  (the compose Stack, waits and HTTP helpers)

PROBE = "probe"


class Writer(threading.Thread):
    """Changes the probe instance's port every `interval` s; records when each write was accepted."""

    def __init__(self, agent_port, interval):
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{agent_port}"
        self.interval = interval
        self.accepted = {}  # port -> monotonic time Consul accepted it
        self.failed = 0
        self.stop = threading.Event()

    def run(self):
        seq = 20000
        while not self.stop.is_set():
            seq += 1
            body = json.dumps({
                "Node": "probe-node", "Address": "127.0.0.1",
                "Service": {"ID": "probe-1", "Service": PROBE, "Tags": ["gateway"], "Port": seq},
            }).encode()
            req = urllib.request.Request(f"{self.base}/v1/catalog/register", data=body, method="PUT")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    if r.status == 200:
                        self.accepted[seq] = time.monotonic()
            except OSError:
                self.failed += 1
            self.stop.wait(self.interval)


class Reader(threading.Thread):
    """Polls the gateway's /services; records when each probe port first shows."""

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.services, self.readyz = stack.admin("/services"), stack.admin("/readyz")
        self.seen = {}
        self.ready = []  # (monotonic time, whether /readyz answered 200)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            status, body = e2e.http_get(self.services, timeout=2)
            now = time.monotonic()
            if status == 200:
                for s in json.loads(body).get("services", []):
                    if s.get("service") == PROBE:
                        for inst in s.get("instances", []):
                            self.seen.setdefault(inst.get("port"), now)
            self.ready.append((time.monotonic(), e2e.http_get(self.readyz, timeout=2)[0] == 200))
            self.stop.wait(0.02)

    def not_ready_after(self, t0):
        """Seconds /readyz said not ready after t0, in all and the longest stretch."""
        total = longest = run = 0.0
        prev = None
        for t, ok in self.ready:
            if t < t0:
                continue
            if prev is not None and not prev[1]:
                total += t - prev[0]
                run += t - prev[0]
                longest = max(longest, run)
            if ok:
                run = 0.0
            prev = (t, ok)
        return total, longest


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def one_mode(mode, args):
    os.environ["GATEWAY_CONSISTENCY"] = mode
    stack = e2e.Stack()
    e2e.log(f"mode {mode}: project {stack.project}")
    try:
        stack.c("up", "-d", "--scale", "serviceweb=1", timeout=600)
        e2e.wait_for("the gateway to be ready", 120, lambda: e2e.http_get(stack.admin("/readyz"))[0] == 200, 0.5)
        agent_port = stack.c("port", "consul-agent", "8500").rsplit(":", 1)[1]
        writer, reader = Writer(agent_port, args.interval), Reader(stack)
        reader.start()
        writer.start()
        time.sleep(args.settle)
        leader = e2e.wait_for("a Raft leader", 30, stack.raft_leader)
        e2e.run(["docker", "kill", stack.containers(leader)[0]])
        t_kill = time.monotonic()
        new = e2e.wait_for("a new leader", 60, lambda: (x := stack.raft_leader()) and x != leader and x, 0.5)
        t_elected = time.monotonic()
        time.sleep(max(0.0, args.after - (t_elected - t_kill)))
        writer.stop.set()
        writer.join(15)
        time.sleep(2)  # the last writes' propagation
        reader.stop.set()
        reader.join(5)
    finally:
        stack.c("down", "-v", "--remove-orphans", "-t", "2", check=False, timeout=300)
    before = [reader.seen[p] - t for p, t in writer.accepted.items() if t < t_kill and p in reader.seen]
    after = {p: t for p, t in writer.accepted.items() if t >= t_kill}
    lags = [reader.seen[p] - t for p, t in after.items() if p in reader.seen]
    shown = [reader.seen[p] for p in after if p in reader.seen]
    not_ready, not_ready_longest = reader.not_ready_after(t_kill)
    return {
        "mode": mode,
        "old leader": leader,
        "new leader": new,
        "election_s": t_elected - t_kill,
        "first_write_s": (min(after.values()) - t_kill) if after else None,
        "read_stall_s": (min(shown) - t_kill) if shown else None,
        "lag_before_p50_ms": 1000 * statistics.median(before) if before else None,
        "lag_before_max_ms": 1000 * max(before) if before else None,
        "lag_after_p50_ms": 1000 * pct(lags, 0.5) if lags else None,
        "lag_after_max_ms": 1000 * max(lags) if lags else None,
        "not_ready_s": not_ready,
        "not_ready_longest_s": not_ready_longest,
        "writes_after": len(after),
        "superseded": len(after) - len(lags),
        "last_shown": bool(after) and max(after) in reader.seen,
        "write_errors": writer.failed,
    }


def fmt(v, unit=""):
    if v is None:
        return "-"
    return f"{v:.0f}{unit}" if unit == " ms" else f"{v:.2f}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="default,stale,consistent")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--after", type=float, default=25.0)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=1, help="runs per mode (modes alternate)")
    ap.add_argument("--out", help="also append the JSON results to this file")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results = [one_mode(m, args) for _ in range(args.rounds) for m in modes]
    print("\n| mode | election | first write after kill | gateway shows it | lag p50 / max after | "
          "lag p50 / max before | /readyz not ready (longest) | superseded | last shown |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {fmt(r['election_s'], ' s')} | {fmt(r['first_write_s'], ' s')} | "
              f"{fmt(r['read_stall_s'], ' s')} | {fmt(r['lag_after_p50_ms'], ' ms')} / "
              f"{fmt(r['lag_after_max_ms'], ' ms')} | {fmt(r['lag_before_p50_ms'], ' ms')} / "
              f"{fmt(r['lag_before_max_ms'], ' ms')} | {fmt(r['not_ready_s'], ' s')} "
              f"({fmt(r['not_ready_longest_s'], ' s')}) | {r['superseded']} of {r['writes_after']} | "
              f"{'yes' if r['last_shown'] else 'NO'} |")
    if args.out:
        with open(args.out, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
