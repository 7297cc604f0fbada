#!/usr/bin/env python3
"""HTTP/2 at the front, gateway vs nginx (issue 11): h2load against each proxy over TLS (ALPN h2)
and over cleartext HTTP/2 with prior knowledge (h2c), the same nginx backend behind both, on
loopback only.

    bash bench/h2.sh [--duration 5] [--clients 32] [--streams 10] [--rounds 1]

Setup: one Consul server, one single-process nginx backend registered as service-web, the gateway
(--workers 1, TLS from a self-signed certificate made with openssl in the run directory, or
cleartext) and nginx (one worker, `listen ... ssl http2` / `listen ... http2`, upstream keepalive
128 as the gateway's idle pool per worker), each pinned to the same CPU; h2load (one thread) and the backend on the other CPU.
Each case: a 1 s warm-up, then --duration seconds counted. Reported per case: requests/s
(h2load's succeeded requests over the counted time) and the proxy's CPU per request (its
processes' scheduler run time from /proc/<pid>/task/<tid>/schedstat over the run, divided by the
requests; the warm-up is included on both sides of that ratio).
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib.procs import HarnessError, Procs, free_port, sched_seconds_between, tree_sched_ns  # noqa: E402
from benchlib.services import (  # noqa: E402
    Consul, _nginx_common, _start_nginx, start_gateway, start_multi_backend, wait_http_ok,
)

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
SERVICE = "service-web"
# nginx keeps as many idle upstream connections as the gateway does (MAX_IDLE_PER_WORKER,
# gateway/src/proxy/upstream/pool.rs): with 320 requests in flight, fewer would make nginx open
# and close upstream connections that the gateway keeps.
MAX_IDLE = 128


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=5, help="counted seconds per case (default 5)")
    p.add_argument("--clients", type=int, default=32, help="h2load clients (connections; default 32)")
    p.add_argument("--streams", type=int, default=10, help="concurrent streams per connection (default 10)")
    p.add_argument("--rounds", type=int, default=1, help="runs of every case; the median is reported (default 1)")
    p.add_argument("--proxy-cpus", default="1", help="taskset CPUs of the proxies (default 1)")
    p.add_argument("--load-cpus", default="0", help="taskset CPUs of h2load and the backend (default 0)")
    p.add_argument("--bin-dir", default=os.path.join(REPO, "target", "release"), help="where gateway and watcher are")
    return p.parse_args(argv)


def self_signed(run_dir):
    cert, key = os.path.join(run_dir, "cert.pem"), os.path.join(run_dir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def nginx_h2_conf(prefix, tls_port, h2c_port, backend_port, cert, key):
    return f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    http2_max_requests 1000000;
{_nginx_common(prefix)}    upstream backends {{
        server 127.0.0.1:{backend_port};
        keepalive {MAX_IDLE};
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl http2;
        listen 127.0.0.1:{h2c_port} http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location /service-web/ {{
            proxy_pass http://backends/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def h2load(url, o):
    argv = ["taskset", "-c", o.load_cpus, "h2load", "-t", "1", "-c", str(o.clients), "-m", str(o.streams),
            "-D", str(o.duration), "--warm-up-time=1", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=o.duration + 60)
    text = out.stdout + out.stderr
    m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not m or not codes:
        raise HarnessError(f"h2load gave no result ({out.returncode}): {text[-800:]}")
    proto = re.search(r"Application protocol: (\S+)", text)
    return {"succeeded": int(m.group(2)), "failed": int(m.group(3)), "ok_2xx": int(codes.group(1)),
            "not_2xx": sum(int(codes.group(i)) for i in (2, 3, 4)),
            "protocol": proto.group(1) if proto else "?", "argv": " ".join(argv[3:])}


def measure(pid, url, o):
    before = tree_sched_ns(pid)
    t0 = time.monotonic()
    r = h2load(url, o)
    wall = time.monotonic() - t0
    cpu = sched_seconds_between(before, tree_sched_ns(pid))
    r["rps"] = r["succeeded"] / o.duration
    # The warm-up's requests are not in h2load's count: the CPU of the whole run is divided by
    # the requests of the whole run, estimated from the counted rate.
    total = r["succeeded"] * (wall / o.duration) if o.duration else r["succeeded"]
    r["cpu_us"] = cpu / max(total, 1) * 1e6
    return r


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main(argv):
    o = parse_args(argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = os.path.join(BENCH_DIR, "out", f"h2-{stamp}")
    os.makedirs(run_dir, exist_ok=True)
    procs = Procs(run_dir)
    consul_bin = os.environ.get("CONSUL_BIN") or os.path.join(REPO, ".tools", "consul")
    results = {}
    try:
        cert, key = self_signed(run_dir)
        consul = Consul(procs, consul_bin, run_dir)
        backend_port = free_port()
        start_multi_backend(procs, run_dir, "backend", [backend_port], cpus=o.load_cpus)
        consul.agent_register("web-1", SERVICE, backend_port)

        tls_port, h2c_port = free_port(), free_port()
        prefix = os.path.join(run_dir, "nginx-h2")
        ngx = _start_nginx(procs, "nginx-h2", nginx_h2_conf(prefix, tls_port, h2c_port, backend_port, cert, key),
                           run_dir, cpus=o.proxy_cpus)
        wait_http_ok(f"http://127.0.0.1:{backend_port}/", 10, ngx, "backend")
        gw_tls, _ = start_gateway(procs, o.bin_dir, "gateway-tls", consul, [SERVICE], cpus=o.proxy_cpus,
                                  extra=["--workers", "1", "--tls-cert", cert, "--tls-key", key])
        gw_h2c, _ = start_gateway(procs, o.bin_dir, "gateway-h2c", consul, [SERVICE], cpus=o.proxy_cpus,
                                  extra=["--workers", "1"])
        cases = [
            ("gateway", "TLS (h2)", gw_tls.pid, f"https://127.0.0.1:{gw_tls.port}/{SERVICE}/"),
            ("nginx", "TLS (h2)", ngx.pid, f"https://127.0.0.1:{tls_port}/{SERVICE}/"),
            ("gateway", "h2c prior knowledge", gw_h2c.pid, f"http://127.0.0.1:{gw_h2c.port}/{SERVICE}/"),
            ("nginx", "h2c prior knowledge", ngx.pid, f"http://127.0.0.1:{h2c_port}/{SERVICE}/"),
        ]
        for rnd in range(o.rounds):
            for proxy, mode, pid, url in cases:
                r = measure(pid, url, o)
                print(f"round {rnd + 1} {proxy:8} {mode:20} {r['protocol']:3} {r['rps']:9.0f} req/s "
                      f"{r['cpu_us']:6.1f} µs CPU/req  failed={r['failed']} not-2xx={r['not_2xx']}", file=sys.stderr)
                if r["failed"] or r["not_2xx"]:
                    raise HarnessError(f"{proxy} {mode}: failures in {r}")
                results.setdefault((proxy, mode), []).append(r)
    finally:
        procs.stop_all()
    report(o, results)


def report(o, results):
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    print(f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}: "
          f"{os.cpu_count()} CPUs ({cpu}), proxies on CPU {o.proxy_cpus}, h2load and backend on CPU {o.load_cpus}")
    first = next(iter(results.values()))[0]
    print(f"h2load: {first['argv'].split(' http')[0]} <url>; {o.rounds} round(s), median\n")
    print("| front | proxy | requests/s | CPU µs/request | ratio to nginx (req/s, CPU) |")
    print("|---|---|---:|---:|---|")
    for mode in ("TLS (h2)", "h2c prior knowledge"):
        ng = results.get(("nginx", mode))
        for proxy in ("gateway", "nginx"):
            rs = results.get((proxy, mode))
            if not rs:
                continue
            rps, cpu = median([r["rps"] for r in rs]), median([r["cpu_us"] for r in rs])
            ratio = ""
            if ng and proxy == "gateway":
                ratio = f"{rps / median([r['rps'] for r in ng]):.2f}×, {cpu / median([r['cpu_us'] for r in ng]):.2f}×"
            print(f"| {mode} | {proxy} | {rps:.0f} | {cpu:.1f} | {ratio} |")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except HarnessError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
