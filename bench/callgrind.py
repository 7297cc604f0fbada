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

The dumps stay in bench/out/<run>/ for callgrind_annotate or kcachegrind.
"""

import argparse
import glob
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import phases  # noqa: E402
from benchlib.load import wrk  # noqa: E402
from benchlib.procs import HarnessError, Procs, free_port  # noqa: E402
from benchlib.services import Consul, reference_conf, start_gateway, wait_http_ok  # noqa: E402

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
    return p.parse_args(argv)


def callgrind(out_dir, name, argv, trace_children=False):
    out = os.path.join(out_dir, f"callgrind.{name}.%p")
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            f"--trace-children={'yes' if trace_children else 'no'}", *argv]


def totals(path):
    """The summed instruction count ('summary:' or 'totals:' line) of one callgrind dump."""
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise HarnessError(f"no totals in {path}")


def measure(o, run_dir, name, proc, pid_pattern):
    """Warm up, zero, load, dump; returns (instructions, requests)."""
    url = f"http://127.0.0.1:{proc.port}/service-web/"
    wrk(url, o.warmup, o.connections, timeout_s="30s")
    before = set(glob.glob(os.path.join(run_dir, f"callgrind.{name}.*")))
    subprocess.run(["callgrind_control", "-z", str(pid_pattern)], check=True, capture_output=True)
    r = wrk(url, o.duration, o.connections, timeout_s="30s")
    subprocess.run(["callgrind_control", "-d", str(pid_pattern)], check=True, capture_output=True)
    time.sleep(0.5)
    dumps = sorted(set(glob.glob(os.path.join(run_dir, f"callgrind.{name}.*"))) - before)
    if not dumps:
        raise HarnessError(f"callgrind wrote no dump for {name}")
    ir = sum(totals(d) for d in dumps)
    if r["errors"]:
        phases.log(f"{name}: {int(r['errors'])} errors during the counted run")
    return ir, int(r["requests"]), dumps


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


def main(argv):
    o = parse_args(argv)
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
        for name in [p for p in o.proxies.split(",") if p]:
            if name == "gateway":
                proc, ready = start_gateway(procs, bin_dir, "gateway", consul, [phases.SERVICE],
                                            ["--workers", o.workers], ready_timeout=60,
                                            wrapper=callgrind(run_dir, "gateway", []))
                if ready is None:
                    raise HarnessError(f"gateway under callgrind not ready within 60 s; see {proc.log_path}")
                label = f"gateway --workers {o.workers}"
            elif name == "nginx":
                proc = start_nginx_ref(procs, run_dir, backends.ports)
                label = "nginx (1 process)"
            else:
                raise HarnessError(f"unknown proxy {name}")
            ir, n, dumps = measure(o, run_dir, name, proc, proc.pid)
            rows.append((label, ir, n, dumps))
            phases.log(f"{label}: {ir / max(n, 1):,.0f} instructions/request ({n} requests)")
            procs.stop(proc)
    finally:
        procs.stop_all()
    print()
    print("| proxy | requests counted | user-space instructions per request |")
    print("|---|---|---|")
    for label, ir, n, _ in rows:
        print(f"| {label} | {n} | {ir / max(n, 1):,.0f} |")
    if o.annotate:
        for label, _, _, dumps in rows:
            print(f"\n== {label}: top functions, inclusive ==")
            out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=95", dumps[-1]],
                                 capture_output=True, text=True)
            print("\n".join(out.stdout.splitlines()[:60]))
    print(f"\ndumps in {run_dir}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except HarnessError as e:
        print(f"callgrind: harness failure: {e}", file=sys.stderr)
        sys.exit(2)
