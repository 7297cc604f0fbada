#!/usr/bin/env python3
"""WebSocket echo throughput (issue 11), on loopback.

One WebSocket echo instance (`ws-bench echo`, tokio-tungstenite) registered in a Consul server as
service `ws-echo`; the gateway (release build, --workers 1) routes /ws-echo/* to it; nginx (one
worker) proxies /ws-echo/ to it with the usual Upgrade/Connection settings. For each message size
and connection count, `ws-bench client` sends a binary message on each connection, waits for its
echo, and again, for --seconds, three ways: directly to the instance, through the gateway, through
nginx, and that --rounds times, alternating. Reported: the median messages echoed per second and MB/s
of payload (each way), the ratio to the direct figure, and every round's figure. Client, proxy and instance share the machine's cores: the figures are for
comparison within one run, not absolute capacities.

    bash bench/ws.sh                                  # 64 B and 16 KiB, 1 and 8 connections, 3 rounds of 3 s
    bash bench/ws.sh --seconds 5 --sizes 64 --no-nginx

Exit status: 0 when the harness worked, 2 when it could not (a process did not start, a client
failed). Everything it starts is stopped on every exit path; logs stay in bench/out/ws-<time>/.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib.procs import HarnessError, Procs, free_port, wait_until  # noqa: E402
from benchlib.services import Consul, _nginx_common, _start_nginx, start_gateway  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
SERVICE = "ws-echo"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement (default 3)")
    p.add_argument("--sizes", default="64,16384", help="comma list of message sizes in bytes (default 64,16384)")
    p.add_argument("--connections", default="1,8", help="comma list of connection counts (default 1,8)")
    p.add_argument("--rounds", type=int, default=3, help="measurements of each figure, alternating paths; the "
                   "median is reported (default 3)")
    p.add_argument("--no-nginx", action="store_true", help="skip the nginx comparison")
    p.add_argument("--bin-dir", default=None, help="where gateway, watcher, ws-bench are (default: <target>/release)")
    return p.parse_args(argv)


def nginx_conf(prefix, listen, echo_port):
    return f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{_nginx_common(prefix)}    server {{
        listen 127.0.0.1:{listen};
        location /{SERVICE}/ {{
            proxy_pass http://127.0.0.1:{echo_port}/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


def run_client(ws_bench, url, size, seconds, connections):
    """One measurement: the client's JSON line as a dict."""
    argv = [ws_bench, "client", url, str(size), str(seconds), str(connections)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if out.returncode != 0:
        raise HarnessError(f"ws-bench client {url} failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_ws(ws_bench, url, what):
    def ok():
        try:
            run_client(ws_bench, url, 16, 0.05, 1)
            return True
        except (HarnessError, subprocess.TimeoutExpired, ValueError):
            return False
    if not wait_until(ok, 20, 0.2):
        raise HarnessError(f"{what} does not echo at {url}")


def main(argv):
    o = parse_args(argv)
    sizes = [int(s) for s in o.sizes.split(",") if s]
    conns = [int(c) for c in o.connections.split(",") if c]
    run_dir = os.path.join(BENCH_DIR, "out", "ws-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(run_dir, exist_ok=True)
    bin_dir = o.bin_dir or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release")
    ws_bench = os.path.join(bin_dir, "ws-bench")
    consul_bin = subprocess.run(["bash", os.path.join(REPO, "scripts", "install-consul.sh")], capture_output=True,
                                text=True, check=True).stdout.strip().splitlines()[-1]
    procs = Procs(run_dir)
    rows = []
    try:
        echo = procs.start("ws-echo", [ws_bench, "echo"], capture=True)
        said = wait_until(lambda: echo.lines_since(0, "listening "), 10, 0.05)
        if not said:
            raise HarnessError(f"the echo instance did not start; see {echo.log_path}")
        port = int(said[1].split()[-1])
        consul = Consul(procs, consul_bin, run_dir)
        consul.agent_register(f"{SERVICE}-1", SERVICE, port)
        gw, ready = start_gateway(procs, bin_dir, "gateway", consul, [SERVICE], ["--workers", "1"])
        if ready is None:
            raise HarnessError(f"gateway not ready; see {gw.log_path}")
        targets = [("direct", f"ws://127.0.0.1:{port}/x"), ("gateway", f"ws://127.0.0.1:{gw.port}/{SERVICE}/x")]
        if not o.no_nginx:
            listen = free_port()
            prefix = os.path.join(run_dir, "nginx")
            _start_nginx(procs, "nginx", nginx_conf(prefix, listen, port), run_dir)
            targets.append(("nginx", f"ws://127.0.0.1:{listen}/{SERVICE}/x"))
        for name, url in targets:
            wait_ws(ws_bench, url, name)
        for size in sizes:
            for c in conns:
                runs = {name: [] for name, _ in targets}
                for r in range(o.rounds):
                    for name, url in targets:
                        m = run_client(ws_bench, url, size, o.seconds, c)
                        runs[name].append(m)
                        print(f"ws: round {r + 1}, {size} B x {c} conn, {name}: {m['messages_per_s']:,.0f} msg/s, "
                              f"{m['mb_per_s']:.1f} MB/s", file=sys.stderr)
                for name, _ in targets:
                    ms = sorted(runs[name], key=lambda m: m["messages_per_s"])
                    median = dict(ms[len(ms) // 2])
                    median["all"] = [round(m["messages_per_s"]) for m in runs[name]]
                    rows.append((size, c, name, median))
    finally:
        procs.stop_all()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"{o.seconds:g} s per measurement, median of {o.rounds}, load average {os.getloadavg()[0]:.1f}\n")
    print("| message | connections | path | messages/s (median) | MB/s (payload, each way) | vs direct | every round, msg/s |")
    print("|---|---|---|---|---|---|---|")
    direct = {(s, c): m for s, c, n, m in rows if n == "direct"}
    for size, c, name, m in rows:
        ratio = m["messages_per_s"] / max(direct[(size, c)]["messages_per_s"], 1)
        every = ", ".join(f"{x:,}" for x in m["all"])
        print(f"| {size} B | {c} | {name} | {m['messages_per_s']:,.0f} | {m['mb_per_s']:.1f} | {ratio:.2f}x | {every} |")
    print(f"\nbinaries: {bin_dir}; logs in {run_dir}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except HarnessError as e:
        print(f"ws: harness failure: {e}", file=sys.stderr)
        sys.exit(2)
