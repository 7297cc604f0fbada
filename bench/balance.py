#!/usr/bin/env python3
"""Balancing policies under load (issue 13, item 5), on loopback.

Three instances of service `bal` registered in a Consul server, the third answering 50 ms later
than the others (`--slow-ms`); the gateway (release build, --workers 1) routes /bal/* to them. For
each policy (`--balance random`, `round-robin`, `least-request`, a gateway each) an open-loop client
sends `--rate` requests per second for `--seconds` (the same offered load for every policy, whatever
the latency: a request is sent on schedule over a free keep-alive connection, a new one if none is
free). Reported: p50, p99 and max latency (from the scheduled send to the last byte), errors, and
the share of requests each instance got.

The instances are this script itself (`balance.py backend PORT DELAY_MS`: asyncio, HTTP/1.1
keep-alive, answering their port). Client, gateway and instances share the machine's cores.

    bash bench/balance.sh                             # 300 req/s for 10 s per policy
    bash bench/balance.sh --rate 500 --seconds 20

Exit status: 0 when the harness worked, 2 when it could not. Logs stay in bench/out/balance-<time>/.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib.procs import HarnessError, Procs, free_port, wait_until  # noqa: E402
from benchlib.services import Consul, http_status, start_gateway  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
SERVICE = "bal"
POLICIES = ("random", "round-robin", "least-request")


async def serve_backend(port, delay_s):
    body = str(port).encode()
    resp = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    async def conn(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                if delay_s:
                    await asyncio.sleep(delay_s)
                writer.write(resp)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(conn, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


async def load(port, path, rate, seconds):
    """Open loop: one request every 1/rate s. Returns (latencies in s, answers by body, errors)."""
    idle, lat, answers, errors = [], [], {}, 0
    request = f"GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n".encode()

    async def one(scheduled):
        nonlocal errors
        conn = idle.pop() if idle else None
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = conn
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            lat.append(time.monotonic() - scheduled)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
                return
            answers[body.decode()] = answers.get(body.decode(), 0) + 1
            idle.append(conn)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            errors += 1

    start, tasks, n = time.monotonic(), [], int(rate * seconds)
    for i in range(n):
        at = start + i / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    for _, w in idle:
        w.close()
    return lat, answers, errors


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def main(argv):
    if argv[:1] == ["backend"]:
        asyncio.run(serve_backend(int(argv[1]), int(argv[2]) / 1000))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=300, help="requests per second (default 300)")
    p.add_argument("--seconds", type=float, default=10, help="seconds per policy (default 10)")
    p.add_argument("--slow-ms", type=int, default=50, help="the third instance's extra delay (default 50)")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--bin-dir", default=None, help="where gateway and watcher are (default: <target>/release)")
    o = p.parse_args(argv)
    run_dir = os.path.join(BENCH_DIR, "out", "balance-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(run_dir, exist_ok=True)
    bin_dir = o.bin_dir or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release")
    consul_bin = subprocess.run(["bash", os.path.join(REPO, "scripts", "install-consul.sh")], capture_output=True,
                                text=True, check=True).stdout.strip().splitlines()[-1]
    procs = Procs(run_dir)
    rows = []
    try:
        consul = Consul(procs, consul_bin, run_dir)
        ports = [free_port() for _ in range(3)]
        delays = [0, 0, o.slow_ms]
        for port, delay in zip(ports, delays):
            procs.start(f"backend-{port}", [sys.executable, os.path.abspath(__file__), "backend", str(port), str(delay)])
            if not wait_until(lambda: http_status(f"http://127.0.0.1:{port}/") == 200, 10, 0.05):
                raise HarnessError(f"backend {port} does not answer")
            consul.agent_register(f"{SERVICE}-{port}", SERVICE, port)
        for policy in o.policies.split(","):
            gw, ready = start_gateway(procs, bin_dir, f"gateway-{policy}", consul, [SERVICE],
                                      ["--workers", "1", "--balance", policy])
            if ready is None:
                raise HarnessError(f"gateway --balance {policy} not ready; see {gw.log_path}")
            url = f"http://127.0.0.1:{gw.port}/{SERVICE}/"
            if not wait_until(lambda: len({http_get_body(url) for _ in range(12)}) == 3, 10, 0.1):
                raise HarnessError("the gateway does not reach all three instances")
            asyncio.run(load(gw.port, f"/{SERVICE}/", o.rate, 1.0))  # warm-up
            lat, answers, errors = asyncio.run(load(gw.port, f"/{SERVICE}/", o.rate, o.seconds))
            lat.sort()
            total = sum(answers.values()) or 1
            shares = [answers.get(str(p), 0) / total for p in ports]
            rows.append((policy, pct(lat, 50), pct(lat, 99), lat[-1] if lat else float("nan"), errors, shares))
            procs.stop(gw)
    except HarnessError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
    print(f"\n{o.rate:.0f} req/s for {o.seconds:.0f} s per policy, open loop; instance 3 answers {o.slow_ms} ms later; "
          "gateway --workers 1\n")
    print("| policy | p50 ms | p99 ms | max ms | errors | share 1 / 2 / 3 (slow) |")
    print("|---|---|---|---|---|---|")
    for policy, p50, p99, mx, errors, shares in rows:
        share = " / ".join(f"{s * 100:.1f} %" for s in shares)
        print(f"| `{policy}` | {p50 * 1000:.1f} | {p99 * 1000:.1f} | {mx * 1000:.1f} | {errors} | {share} |")
    print(f"\nlogs: {run_dir}")
    return 0


def http_get_body(url):
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
