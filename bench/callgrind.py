#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by valgrind's callgrind.

Instruction counts do not depend on what else the machine is doing, so two builds (or the gateway
and nginx) can be compared to a fraction of a percent, where wall-clock CPU figures move by ±10%.
They do not include the kernel's share (syscalls, TCP), which bench.py's CPU µs/request does.

Setup as in bench.py (one Consul server, 3 nginx backends registered as service-web). Each proxy
runs under `valgrind --tool=callgrind`; after a warm-up, the counters are zeroed
(`callgrind_control -z`), wrk sends load for a fixed time, and the counters are dumped
(`callgrind_control -d`): instructions in that window / wrk's responses in it.

    bash bench/callgrind.sh                      # gateway --workers 1 and nginx
    bash bench/callgrind.sh --proxies gateway    # gateway only
    bash bench/callgrind.sh --annotate           # also print the top functions (inclusive)
    bash bench/callgrind.sh --proxies gateway --extra-routes 10000   # the same route among 10,000

With --extra-routes N, N-1 more services (svc-<i>, one instance each, tagged to opt in: see
--extra-route-tag) are registered in Consul (/v1/txn batches, from 127.0.0.2) before the gateway
starts, and the counting waits until the gateway's GET /routes lists all N routes. The measured
request is still GET /service-web/ (a --services route). The gateway then runs under callgrind with
instrumentation off until the routes are loaded (--instr-atstart=no, then `callgrind_control -i on`
before the warm-up): loading thousands of services under full instrumentation takes far longer,
and the counted window is the same either way.

The dumps stay in bench/out/<run>/ for callgrind_annotate or kcachegrind.
"""

import argparse
import glob
import http.client
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import phases  # noqa: E402
from benchlib.load import wrk  # noqa: E402
from benchlib.procs import HarnessError, Procs, free_port  # noqa: E402
from benchlib.services import Consul, http_json, reference_conf, start_gateway, wait_http_ok  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", default="gateway,nginx", help="comma list of gateway, nginx (default both)")
    p.add_argument("--duration", type=int, default=10, help="seconds of counted load (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="seconds of load before counting (default 3)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--workers", default="1", help="gateway --workers (default 1)")
    p.add_argument("--annotate", action="store_true", help="print the top functions by inclusive count")
    p.add_argument("--bin-dir", default=None, help="where gateway and watcher are (default: <target>/release)")
    p.add_argument("--extra-routes", type=int, default=None, metavar="N",
                   help="routes in the gateway's table in all (default: just /service-web): registers N-1 more "
                        "opted-in services and waits until GET /routes lists N routes before counting")
    p.add_argument("--extra-route-tag", choices=("gateway", "urlprefix", "host"), default="gateway",
                   help="how the extra services opt in: gateway (the tag `gateway`, route /svc-<i>; default), "
                        "urlprefix (`urlprefix-/svc-<i>`), host (`urlprefix-svc-<i>.example/`: host routes, so "
                        "every request's Host is normalised and probed)")
    p.add_argument("--idle", type=float, default=None, metavar="S",
                   help="also count S seconds with no load after the counted run: the gateway's background work "
                        "(timers, sweeps over every service), reported per second and taken out of the net figure "
                        "(default: --duration with --extra-routes, else 0)")
    p.add_argument("--routes-timeout", type=float, default=900,
                   help="s to wait for the gateway to list every route (default 900)")
    return p.parse_args(argv)


def callgrind(out_dir, name, argv, trace_children=False, instr_at_start=True):
    out = os.path.join(out_dir, f"callgrind.{name}.%p")
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            f"--trace-children={'yes' if trace_children else 'no'}",
            *([] if instr_at_start else ["--instr-atstart=no"]), *argv]


def totals(path):
    """The summed instruction count ('summary:' or 'totals:' line) of one callgrind dump."""
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise HarnessError(f"no totals in {path}")


def measure(o, run_dir, name, proc, pid_pattern, instr_on=False):
    """Warm up, zero, load, dump; returns (instructions, requests). instr_on: switch callgrind's
    instrumentation on first (started with --instr-atstart=no)."""
    url = f"http://127.0.0.1:{proc.port}/service-web/"
    if instr_on:
        subprocess.run(["callgrind_control", "-i", "on", str(pid_pattern)], check=True, capture_output=True)
    wrk(url, o.warmup, o.connections, timeout_s="30s")
    before = set(glob.glob(os.path.join(run_dir, f"callgrind.{name}.*")))
    subprocess.run(["callgrind_control", "-z", str(pid_pattern)], check=True, capture_output=True)
    t0 = time.monotonic()
    r = wrk(url, o.duration, o.connections, timeout_s="30s")
    subprocess.run(["callgrind_control", "-d", str(pid_pattern)], check=True, capture_output=True)
    loaded_s = time.monotonic() - t0
    time.sleep(0.5)
    dumps = sorted(set(glob.glob(os.path.join(run_dir, f"callgrind.{name}.*"))) - before)
    if not dumps:
        raise HarnessError(f"callgrind wrote no dump for {name}")
    ir = sum(totals(d) for d in dumps)
    if r["errors"]:
        phases.log(f"{name}: {int(r['errors'])} errors during the counted run")
    idle_rate = None
    if o.idle:
        # The same counters over a window with no load: what the process does per second anyway.
        before = set(glob.glob(os.path.join(run_dir, f"callgrind.{name}.*")))
        subprocess.run(["callgrind_control", "-z", str(pid_pattern)], check=True, capture_output=True)
        t1 = time.monotonic()
        time.sleep(o.idle)
        subprocess.run(["callgrind_control", "-d", str(pid_pattern)], check=True, capture_output=True)
        idle_s = time.monotonic() - t1
        time.sleep(0.5)
        idle = sorted(set(glob.glob(os.path.join(run_dir, f"callgrind.{name}.*"))) - before)
        idle_rate = sum(totals(d) for d in idle) / idle_s
    return {"ir": ir, "requests": int(r["requests"]), "dumps": dumps, "seconds": loaded_s, "idle_rate": idle_rate}


def start_nginx_ref(procs, run_dir, ports):
    """The reference proxy with master_process off, so the one process under valgrind does the work."""
    port = free_port()
    prefix = os.path.join(run_dir, "nginx-ref")
    os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
    conf = reference_conf(prefix, port, ports).replace("worker_processes 1;", "master_process off;\nworker_processes 1;")
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    argv = callgrind(run_dir, "nginx", ["nginx", "-p", prefix, "-c", path, "-e", os.path.join(prefix, "error.log")])
    proc = procs.start("nginx-ref", argv)
    wait_http_ok(f"http://127.0.0.1:{port}/service-web/", 60, proc, "nginx reference proxy")
    proc.port = port
    return proc


EXTRA_NODE = "bench-routes-node"


def extra_instances(n, tag_kind, port):
    """The N-1 extra services' instances (one each, no check: passing on the health view)."""
    def tag(i):
        return {"gateway": "gateway", "urlprefix": f"urlprefix-/svc-{i}",
                "host": f"urlprefix-svc-{i}.example/"}[tag_kind]
    return [{"node": EXTRA_NODE, "sid": f"svc-{i}-0", "name": f"svc-{i}", "port": port, "tags": [tag(i)]}
            for i in range(1, n)]


def route_count(admin_port):
    """How many routes the gateway's GET /routes lists (None if it does not answer)."""
    try:
        status, body = http_json(f"http://127.0.0.1:{admin_port}/routes", timeout=60)
    except (OSError, ValueError, http.client.HTTPException):
        return None
    return len(body.get("routes", [])) if status == 200 and isinstance(body, dict) else None


def wait_routes(proc, n, timeout):
    """Polls GET /routes until it lists n routes; returns the seconds it took, or raises."""
    t0 = time.monotonic()
    last, said = None, t0
    while time.monotonic() - t0 < timeout:
        if not proc.alive():
            raise HarnessError(f"gateway exited while loading routes; see {proc.log_path}")
        last = route_count(proc.admin)
        if last is not None and last >= n:
            return time.monotonic() - t0
        if time.monotonic() - said >= 30:
            phases.log(f"gateway lists {last} of {n} routes after {time.monotonic() - t0:.0f} s")
            said = time.monotonic()
        time.sleep(1.0 if n > 1000 else 0.2)
    raise HarnessError(f"the gateway listed {last} of {n} routes after {timeout:.0f} s; see {proc.log_path}")


def main(argv):
    o = parse_args(argv)
    if o.idle is None:
        o.idle = o.duration if o.extra_routes is not None else 0
    run_dir = os.path.join(BENCH_DIR, "out", "callgrind-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(run_dir, exist_ok=True)
    bin_dir = o.bin_dir or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release")
    consul_bin = subprocess.run(["bash", os.path.join(REPO, "scripts", "install-consul.sh")], capture_output=True,
                                text=True, check=True).stdout.strip().splitlines()[-1]
    procs = Procs(run_dir)
    rows = []
    try:
        consul = Consul(procs, consul_bin, run_dir)
        opts = argparse.Namespace(backends=3)
        env = phases.Env(opts, procs, consul, bin_dir, run_dir, (None, None, None))
        backends = phases.setup_backends(env)
        routes = o.extra_routes or 1
        if routes > 1:
            took = consul.register_many(extra_instances(routes, o.extra_route_tag, backends.ports[0]))
            phases.log(f"registered {routes - 1} extra services (tag: {o.extra_route_tag}) in {took:.1f} s")
        for name in [p for p in o.proxies.split(",") if p]:
            instr_on = False
            if name == "gateway":
                late = o.extra_routes is not None  # instrumentation from the warm-up on (see the doc above)
                proc, ready = start_gateway(procs, bin_dir, "gateway", consul, [phases.SERVICE],
                                            ["--workers", o.workers], ready_timeout=60 if routes < 1000 else 600,
                                            wrapper=callgrind(run_dir, "gateway", [], instr_at_start=not late))
                if ready is None:
                    raise HarnessError(f"gateway under callgrind not ready in time; see {proc.log_path}")
                label = f"gateway --workers {o.workers}"
                if o.extra_routes is not None:
                    took = wait_routes(proc, routes, o.routes_timeout)
                    phases.log(f"gateway lists {routes} routes, {took:.1f} s after /readyz")
                    label += f", {routes} routes" + ("" if o.extra_route_tag == "gateway" else f" ({o.extra_route_tag})")
                    instr_on = late
            elif name == "nginx":
                proc = start_nginx_ref(procs, run_dir, backends.ports)
                label = "nginx (1 process)"
            else:
                raise HarnessError(f"unknown proxy {name}")
            m = measure(o, run_dir, name, proc, proc.pid, instr_on=instr_on)
            rows.append((label, m))
            phases.log(f"{label}: {m['ir'] / max(m['requests'], 1):,.0f} instructions/request ({m['requests']} requests)")
            procs.stop(proc)
    finally:
        procs.stop_all()
    print()
    if o.idle:
        print("| proxy | requests counted | user-space instructions per request | with no load, per second "
              "| per request, less the no-load rate over the counted run |")
        print("|---|---|---|---|---|")
        for label, m in rows:
            n = max(m["requests"], 1)
            net = (m["ir"] - m["idle_rate"] * m["seconds"]) / n
            print(f"| {label} | {m['requests']} | {m['ir'] / n:,.0f} | {m['idle_rate']:,.0f} | {net:,.0f} |")
    else:
        print("| proxy | requests counted | user-space instructions per request |")
        print("|---|---|---|")
        for label, m in rows:
            print(f"| {label} | {m['requests']} | {m['ir'] / max(m['requests'], 1):,.0f} |")
    if o.annotate:
        for label, m in rows:
            dumps = m["dumps"]
            print(f"\n== {label}: top functions, inclusive ==")
            out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=95", dumps[-1]],
                                 capture_output=True, text=True)
            print("\n".join(out.stdout.splitlines()[:60]))
    print(f"\nbinaries: {bin_dir}; dumps in {run_dir}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except HarnessError as e:
        print(f"callgrind: harness failure: {e}", file=sys.stderr)
        sys.exit(2)
