#!/usr/bin/env python3
"""Churn soak (issue 14): the gateway under traffic while 50 services' instances are registered and
deregistered at 20 operations per second, for --soak-duration (default 10 min).

Run through bench/soak.sh (which installs nginx and wrk and builds the release binaries). On loopback:
one Consul 1.8.7 server agent, one nginx process listening on one port per instance slot, the
gateway (`--services soak-0,...`) with its watcher, wrk spreading requests over the services, a
Python probe that records each request's service and answer, and the gateway's change feed
(`GET /events`) that timestamps when each change reached it. See bench/README.md, "Churn soak".

Exit status: 0 when the harness worked (whatever the numbers), 2 when it could not do its job,
130 when interrupted. The last line printed is `SOAK_RESULT key=value ...`.
"""

import argparse
import http.client
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import closing

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import _cmd, loadavg, machine  # noqa: E402
from benchlib import churn, load, soak_report  # noqa: E402
from benchlib.phases import log  # noqa: E402
from benchlib.procs import (CLK_TCK, HarnessError, Procs, comm, cpu_ticks, descendants, free_port,  # noqa: E402
                            machine_busy_seconds, status_kb, wait_until)
from benchlib.services import Consul, http_json, start_gateway, start_multi_backend  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
WRK_LUA = os.path.join(BENCH_DIR, "wrk-soak.lua")


def duration(text):
    """'10m', '30s', '1h', '90' (seconds) -> seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (say 30s, 10m, 1h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--soak-duration", type=duration, default=600.0, help="measured churn time (default 10m)")
    p.add_argument("--warmup", type=duration, default=None,
                   help="churn and traffic before the start values are taken (default 30s; 5s when the soak is "
                        "shorter than 2 min)")
    p.add_argument("--services", type=int, default=50, help="services (default 50)")
    p.add_argument("--slots", type=int, default=3, help="instance slots (backend ports) per service (default 3)")
    p.add_argument("--initial", type=int, default=2, help="instances of each service registered at start (default 2)")
    p.add_argument("--volatile", type=int, default=5,
                   help="services that may lose every instance (the last N; default 5); the others keep one")
    p.add_argument("--rate", type=float, default=20.0, help="registrations + deregistrations per second (default 20)")
    p.add_argument("--churn-threads", type=int, default=2, help="threads making the changes, each over its share of "
                                                                 "the services (default 2)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16; one wrk thread)")
    p.add_argument("--wrk-services", choices=("stable", "all"), default="stable",
                   help="services wrk spreads over: stable (default: the ones that always keep an instance, so "
                        "every wrk error counts) or all")
    p.add_argument("--probe-rate", type=float, default=200.0, help="probe requests per second, in all (default 200)")
    p.add_argument("--probe-threads", type=int, default=4, help="probe keep-alive clients (default 4)")
    p.add_argument("--sample-interval", type=float, default=2.0, help="s between RSS/fd/connection samples (default 2)")
    p.add_argument("--grace", type=float, default=1.0,
                   help="s after a change's call returned that stand in for its propagation if the gateway's "
                        "change feed never showed it (default 1)")
    p.add_argument("--prop-timeout", type=float, default=10.0,
                   help="s after which an unseen change counts as not seen and its instance may change again "
                        "(default 10)")
    p.add_argument("--workers", type=int, default=None, help="gateway --workers (default: the gateway's default)")
    p.add_argument("--gateway-arg", action="append", default=[], metavar="ARG",
                   help="one more gateway argument (repeat it: --gateway-arg=--watcher-bin --gateway-arg=PATH)")
    p.add_argument("--consul-mode", choices=("server", "dev"), default="server", help="as bench.py (default server)")
    p.add_argument("--bin-dir", default=None, help="where gateway and watcher are (default: <target>/release)")
    p.add_argument("--results", default=None, help="also write the Markdown report here")
    p.add_argument("--seed", type=int, default=1, help="seed of the churn's choices (default 1)")
    o = p.parse_args(argv)
    if o.warmup is None:
        o.warmup = 30.0 if o.soak_duration >= 120 else 5.0
    if not (1 <= o.initial <= o.slots) or o.volatile > o.services or o.rate <= 0 or o.services < 1:
        p.error("need 1 <= --initial <= --slots, --volatile <= --services, --rate > 0")
    if o.churn_threads < 1 or o.churn_threads > o.services:
        p.error("--churn-threads: 1 to --services")
    return o


class Sampler:
    """Every `interval` s: VmRSS and open fds of the gateway and of its watcher, the fds split by what
    they are (TCP connections to Consul's HTTP port, to instances, from clients; everything else:
    listeners, files, epoll, eventfds, pipes, unix sockets)."""

    def __init__(self, gw, consul_port, backend_ports, interval):
        self.gw, self.port, self.backends, self.interval = gw, consul_port, set(backend_ports), interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self):
        while True:
            self.samples.append(self.sample())
            if self._stop.wait(self.interval):
                return

    def sample(self):
        watchers = [p for p in descendants(self.gw.pid) if p != self.gw.pid and comm(p) == "watcher"]
        w = watchers[0] if watchers else None
        tcp = tcp_sockets()
        g, wf = self.fds(self.gw.pid, tcp), self.fds(w, tcp) if w else {}
        return {"t": time.monotonic(), "watcher_pids": watchers,
                "gw_rss": status_kb(self.gw.pid, "VmRSS"), "w_rss": status_kb(w, "VmRSS") if w else None,
                "gw_fds": g.get("total"), "w_fds": wf.get("total"), "gw_other": g.get("other"),
                "w_other": wf.get("other"), "gw_upstream": g.get("upstream"), "gw_downstream": g.get("downstream"),
                "gw_conns": g.get("consul"), "w_conns": wf.get("consul"),
                "conns": (g.get("consul") or 0) + (wf.get("consul") or 0)}

    def fds(self, pid, tcp):
        """{total, consul, upstream, downstream, other} for one process ({} if it is gone). A socket
        opened after `tcp` was read is looked up again in a fresh read."""
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return {}
        targets = []
        for fd in names:
            try:
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass  # closed meanwhile
        inodes = [t[8:-1] for t in targets if t.startswith("socket:[")]
        if any(i not in tcp for i in inodes):
            tcp.update(tcp_sockets())
        out = {"total": len(targets), "consul": 0, "upstream": 0, "downstream": 0, "other": 0}
        for t in targets:
            state, lport, rport = tcp.get(t[8:-1], (None, None, None)) if t.startswith("socket:[") else (None, None, None)
            if state == "01" and rport == self.port:
                out["consul"] += 1
            elif state is not None and rport in self.backends:
                out["upstream"] += 1
            elif state is not None and lport == self.gw.port and rport:
                out["downstream"] += 1
            else:
                out["other"] += 1
        return out


def tcp_sockets():
    """{inode: (state hex, local port, remote port)} of every TCP socket (IPv4 and IPv6)."""
    out = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            x = line.split()
            if len(x) >= 10:
                out[x[9]] = (x[3], int(x[1].rsplit(":", 1)[1], 16), int(x[2].rsplit(":", 1)[1], 16))
    return out


def tree_cpu_by_comm(root):
    out = {}
    for p in descendants(root):
        out[comm(p)] = out.get(comm(p), 0) + cpu_ticks(p)
    return out


def main(argv):
    o = parse_args(argv)
    churn.check_judge()
    run_dir = os.path.join(BENCH_DIR, "out", time.strftime("soak-%Y%m%d-%H%M%S"))
    os.makedirs(run_dir, exist_ok=True)
    bin_dir = o.bin_dir or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release")
    for b in ("gateway", "watcher"):
        if not os.access(os.path.join(bin_dir, b), os.X_OK):
            raise HarnessError(f"{bin_dir}/{b} not found; build with cargo build --release --bins")
    for tool in ("nginx", "wrk"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            raise HarnessError(f"{tool} not found (bench/soak.sh installs it)")
    r = subprocess.run(["bash", os.path.join(REPO, "scripts", "install-consul.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        raise HarnessError(f"scripts/install-consul.sh failed: {r.stderr[-500:]}")
    consul_bin = r.stdout.strip().splitlines()[-1]
    info = {"machine": machine(), "load_before": loadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "git": _cmd(["git", "-C", REPO, "describe", "--always", "--dirty"]), "wrk": _cmd(["wrk", "-v"]),
            "python": platform.python_version(), "bin_dir": bin_dir, "argv": argv}
    log(f"run dir {run_dir}; load {info['load_before']}")

    procs = Procs(run_dir)
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt(f"signal {s}")))
    signal.signal(signal.SIGHUP, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt(f"signal {s}")))
    try:
        res = run(o, procs, consul_bin, bin_dir, run_dir, info)
    finally:
        procs.stop_all()
    info["load_after"] = loadavg()
    with open(os.path.join(run_dir, "samples.json"), "w") as f:  # the raw series, for a closer look
        json.dump([{**x, "t": round(x["t"] - res["t0"], 3)} for x in res["samples"]], f)
    text = soak_report.render(o, info, res)
    with open(os.path.join(run_dir, "report.md"), "w") as f:
        f.write(text)
    if o.results:
        with open(o.results, "w") as f:
            f.write(text)
    print()
    print(text)
    log(f"logs in {run_dir}")
    print(soak_report.result_line(res), flush=True)


def run(o, procs, consul_bin, bin_dir, run_dir, info):
    rng = random.Random(o.seed)
    consul = Consul(procs, consul_bin, run_dir, o.consul_mode)
    info["consul"] = consul.version()
    ports = [free_port() for _ in range(o.services * o.slots)]
    start_multi_backend(procs, run_dir, "backends", ports)
    fleet = churn.Fleet(o.services, o.slots, o.volatile, ports, ttl=f"{int(o.warmup + o.soak_duration) + 3600}s")
    with closing(consul.connection()) as c:
        fleet.setup(consul, c, rng, o.initial)
    log(f"consul :{consul.port}; {o.services} services × {o.initial} of {o.slots} instances registered")
    extra = (["--workers", str(o.workers)] if o.workers else []) + o.gateway_arg
    gw, ready = start_gateway(procs, bin_dir, "gateway", consul, fleet.names, extra)
    if ready is None:
        raise HarnessError(f"gateway not ready within 30 s; see {gw.log_path}")
    if not wait_until(lambda: _routes_match(gw, fleet.expected()) == (0, 0), 30, 0.2):
        raise HarnessError(f"gateway's /services did not show the registered instances within 30 s; see {gw.log_path}")
    feed = churn.ChangeFeed(gw.admin, fleet)
    stop = threading.Event()
    wrk_out = {}
    wrk_paths = [f"/{n}/" for n in (fleet.stable() if o.wrk_services == "stable" else fleet.names)]
    total = o.warmup + o.soak_duration

    def drive():
        try:
            wrk_out["r"] = load.wrk(f"http://127.0.0.1:{gw.port}", int(round(total)), o.connections,
                                    script=WRK_LUA, script_args=wrk_paths)
        except HarnessError as e:
            wrk_out["error"] = str(e)

    cpu0 = {"gw": tree_cpu_by_comm(gw.pid), "consul": cpu_ticks(consul.proc.pid)}
    busy0, t0 = machine_busy_seconds(), time.monotonic()
    with Sampler(gw, consul.port, ports, o.sample_interval) as sampler, \
            churn.Probe(gw.port, fleet.names, o.probe_rate, o.probe_threads) as probe:
        wrk_thread = threading.Thread(target=drive, daemon=True)
        wrk_thread.start()
        threads = churn.churn(fleet, consul, o.rate, o.churn_threads, stop, o.prop_timeout, o.seed)
        log(f"warm-up {o.warmup:.0f} s, then {o.soak_duration:.0f} s of churn at {o.rate:g} ops/s")
        _sleep_watching(o.warmup, gw, fleet)
        t_start = time.monotonic()
        log("warm-up done; soak starts")
        _sleep_watching(o.soak_duration, gw, fleet)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        t_end = time.monotonic()
        ops_window = [op for op in fleet.ops if op.t_start < t_end]
        log(f"churn stopped: {len(fleet.ops)} operations; waiting for the last changes to show")
        wait_until(lambda: all(i.pending is None for i in fleet.by_port.values()), o.prop_timeout, 0.05)
        wrk_thread.join(timeout=max(5.0, total - (time.monotonic() - t0) + 40))
    busy = (machine_busy_seconds() - busy0) / (time.monotonic() - t0)
    cpu1 = {"gw": tree_cpu_by_comm(gw.pid), "consul": cpu_ticks(consul.proc.pid)}
    missing, extra_inst = _routes_match(gw, fleet.expected())
    feed.close()
    if fleet.errors:
        raise HarnessError("; ".join(fleet.errors))
    if "r" not in wrk_out:
        raise HarnessError(wrk_out.get("error", "wrk did not finish"))
    wall = time.monotonic() - t0
    cpu = {k: (v - cpu0["gw"].get(k, 0)) / CLK_TCK / wall for k, v in cpu1["gw"].items()}
    cpu["consul"] = (cpu1["consul"] - cpu0["consul"]) / CLK_TCK / wall
    log(f"judging {len(probe.records)} probe requests")
    return {"fleet": fleet, "ops": ops_window, "t0": t0, "t_start": t_start, "t_end": t_end,
            "samples": sampler.samples, "probe": churn.judge(fleet, probe.records, o.grace),
            "wrk": wrk_out["r"], "wrk_paths": len(wrk_paths), "feed": feed, "gw_alive": gw.alive(),
            "converged": (missing, extra_inst), "cpu": cpu, "busy": busy * 100 / (os.cpu_count() or 1),
            "gw_log": os.path.relpath(gw.log_path, REPO)}


def _sleep_watching(seconds, gw, fleet):
    """Sleeps, but gives up early (a harness failure) if the gateway died or the churn failed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not gw.alive():
            raise HarnessError(f"the gateway exited with {gw.popen.returncode}; see {gw.log_path}")
        if fleet.errors:
            raise HarnessError("; ".join(fleet.errors))
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _routes_match(gw, expected):
    """(instances registered but missing from the gateway's /services, instances there that are not
    registered), over all services."""
    try:
        status, body = http_json(f"http://127.0.0.1:{gw.admin}/services")
    except (OSError, ValueError, http.client.HTTPException):
        return (-1, -1)
    if status != 200:
        return (-1, -1)
    seen = {s["service"]: {i["port"] for i in s.get("instances", [])} for s in body.get("services", [])}
    missing = sum(len(ports - seen.get(n, set())) for n, ports in expected.items())
    extra = sum(len(seen.get(n, set()) - ports) for n, ports in expected.items())
    return missing, extra


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except HarnessError as e:
        print(f"soak: harness failure: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        sys.exit(130)
