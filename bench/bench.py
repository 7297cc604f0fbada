#!/usr/bin/env python3
"""Issue 4's measuring harness: the gateway against nginx as a static reverse proxy, on loopback.

Run through bench/run.sh (which installs nginx and wrk and builds the release binaries).
See bench/README.md for what is measured and how to read the output.
"""

import argparse
import os
import platform
import shlex
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import phases, report, setups  # noqa: E402
from benchlib.procs import HarnessError, Procs, machine_busy_percent  # noqa: E402
from benchlib.services import Consul  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
PHASES = ("throughput", "propagation", "failover", "scale")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a few seconds of everything; never asserts on timing")
    p.add_argument("--rounds", type=int, help="throughput rounds, each running every proxy once (default 5; smoke 1)")
    p.add_argument("--duration", type=int, help="seconds of measured load per run (default 10; smoke 2)")
    p.add_argument("--warmup", type=int, help="seconds of unmeasured load before each run (default 2; smoke 1)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32; wrk uses 1 thread)")
    p.add_argument("--backends", type=int, default=3, help="nginx backends (default 3)")
    p.add_argument("--workers", default="1,2", help="gateway --workers values to measure (default 1,2)")
    p.add_argument("--setups", default=None, metavar="PRESET|SPEC[;SPEC...]",
                   help="the throughput phase under other setups instead of the pinned comparison: `defaults` "
                        "(defaults against defaults), `matrix` (one factor at a time), or specs "
                        "`[label:]key=value,...` with keys pin, gw, ngx, backends, upstream, wrk "
                        "(see benchlib/setups.py and bench/README.md)")
    p.add_argument("--defaults", action="store_true", help="the same as --setups defaults")
    p.add_argument("--prop-reps", type=int, help="propagation repetitions (default 20; smoke 3)")
    p.add_argument("--prop-timeout", type=float, help="give up on one propagation after this many s (default 10; smoke 5)")
    p.add_argument("--quiet", type=float, help="s without a response from a removed instance that mean it is gone "
                                               "(default 1.0; smoke 0.3)")
    p.add_argument("--prober-threads", type=int, default=4, help="keep-alive client threads of the prober (default 4)")
    p.add_argument("--failover-duration", type=int, help="seconds of load in the failover run (default 20; smoke 3)")
    p.add_argument("--scale-services", type=int, help="services in the scale test (default 1000; smoke 100)")
    p.add_argument("--scale-instances", type=int, default=5, help="instances per service in the scale test (default 5)")
    p.add_argument("--scale-reps", type=int, help="changes measured at scale, one service each (default 5; smoke 1)")
    p.add_argument("--scale-checks", default="yes,no",
                   help="which --services scale variants: instances with a passing check (yes), without (no), "
                        "none; default yes,no")
    p.add_argument("--scale-tagged", default=None, metavar="N[,N...]",
                   help="also the scale variant of services that opt in by tag, at each of these sizes "
                        "(default 2500; smoke 100; none: skip)")
    p.add_argument("--scale-tagged-instances", type=int, default=3,
                   help="instances per service in the tagged scale variant (default 3)")
    p.add_argument("--scale-cost-changes", type=int, default=None,
                   help="check flips over which the tagged variant measures the cost of one change "
                        "(default 20; smoke 2)")
    p.add_argument("--scale-workers", type=int, default=None,
                   help="gateway --workers in the tagged scale variant (default: the gateway's own default)")
    p.add_argument("--scale-timeout", type=float, help="s to wait for /readyz at scale (default 30; smoke 10)")
    p.add_argument("--consul-mode", choices=("server", "dev"), default="server",
                   help="server (default): one Consul server as in production; dev: `consul agent -dev`, "
                        "which pretty-prints every answer (see bench/README.md)")
    p.add_argument("--pin", choices=("split", "none"), default="split",
                   help="split (default): proxy on CPU 0, wrk on CPU 1, backends unpinned; none: no pinning")
    p.add_argument("--wait-quiet", type=float, default=0,
                   help="before each throughput round, wait for the machine to be <15%% busy, up to this many s "
                        "in all (default 0: do not wait)")
    p.add_argument("--perf", action="store_true",
                   help="after the rounds, profile each proxy under one more wrk run (perf, cpu-clock); "
                        "flat reports in bench/out/<run>/perf-*.txt")
    p.add_argument("--proxy-cpus", help="taskset CPU list for the proxy (overrides --pin)")
    p.add_argument("--wrk-cpus", help="taskset CPU list for wrk (overrides --pin)")
    p.add_argument("--backend-cpus", help="taskset CPU list for the nginx backends (overrides --pin)")
    p.add_argument("--only", default=",".join(PHASES), help=f"comma list of phases to run (default all: {','.join(PHASES)})")
    p.add_argument("--bin-dir", default=None, help="where gateway and watcher are (default: <target>/release)")
    p.add_argument("--baseline-bin-dir", default=None,
                   help="another build's gateway and watcher (e.g. the previous commit's target/release): the "
                        "throughput phase also runs it, as 'baseline --workers N', in the same alternating rounds")
    p.add_argument("--results", default=None,
                   help="also write the Markdown report here (default: bench/RESULTS.md for a full run of all phases, "
                        "nothing for --smoke)")
    o = p.parse_args(argv)
    full = not o.smoke
    for name, full_v, smoke_v in [("rounds", 5, 1), ("duration", 10, 2), ("warmup", 2, 1), ("prop_reps", 20, 3),
                                  ("prop_timeout", 10.0, 5.0), ("quiet", 1.0, 0.3), ("failover_duration", 20, 3),
                                  ("scale_services", 1000, 100), ("scale_reps", 5, 1), ("scale_timeout", 30.0, 10.0),
                                  ("scale_tagged", "2500", "100"), ("scale_cost_changes", 20, 2)]:
        if getattr(o, name) is None:
            setattr(o, name, full_v if full else smoke_v)
    o.workers = [int(w) for w in o.workers.split(",") if w]
    try:
        o.scale_checks = [{"yes": True, "no": False}[x] for x in o.scale_checks.split(",") if x and x != "none"]
        o.scale_tagged = [int(x) for x in o.scale_tagged.split(",") if x and x != "none"]
    except (KeyError, ValueError):
        p.error("--scale-checks takes yes,no,none; --scale-tagged a comma list of service counts or none")
    if o.defaults:
        if o.setups not in (None, "defaults"):
            p.error("--defaults is --setups defaults; give one of them")
        o.setups = "defaults"
    try:
        o.setup_list = setups.parse(o.setups) if o.setups else []
    except ValueError as e:
        p.error(f"--setups: {e}")
    o.only = [x for x in o.only.split(",") if x]
    for x in o.only:
        if x not in PHASES:
            p.error(f"--only: unknown phase {x}")
    if o.results is None and full and set(o.only) == set(PHASES) and not o.setup_list:
        o.results = os.path.join(BENCH_DIR, "RESULTS.md")
    return o


def pins(o):
    n = os.cpu_count() or 1
    if o.pin == "none" or n < 2:
        proxy, wrk, backends = None, None, None
    else:
        proxy, wrk, backends = "0", "1", None
    proxy, wrk, backends = o.proxy_cpus or proxy, o.wrk_cpus or wrk, o.backend_cpus or backends
    desc = f"proxy (gateway or nginx) on CPUs {proxy or 'any'}, wrk on {wrk or 'any'}, backends on {backends or 'any'}"
    return proxy, wrk, backends, desc + ", Consul and the harness unpinned"


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "mem_gib": mem,
            "os": _cmd(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])}


def _cmd(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv):
    o = parse_args(argv)
    run_dir = os.path.join(BENCH_DIR, "out", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(run_dir, exist_ok=True)
    bin_dir = o.bin_dir or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release")
    for b in ("gateway", "watcher"):
        if not os.access(os.path.join(bin_dir, b), os.X_OK):
            raise HarnessError(f"{bin_dir}/{b} not found; build with cargo build --release --bins")
    consul_bin = subprocess.run(["bash", os.path.join(REPO, "scripts", "install-consul.sh")], capture_output=True,
                                text=True, check=False)
    if consul_bin.returncode != 0:
        raise HarnessError(f"scripts/install-consul.sh failed: {consul_bin.stderr[-500:]}")
    consul_bin = consul_bin.stdout.strip().splitlines()[-1]

    proxy_cpus, wrk_cpus, backend_cpus, pin_desc = pins(o)
    t_begin = time.monotonic()
    info = {"machine": machine(), "load_before": loadavg(), "busy_before": machine_busy_percent(1.0),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "pin": pin_desc,
            "git": _cmd(["git", "-C", REPO, "describe", "--always", "--dirty"]),
            "nginx": _cmd(["nginx", "-v"]), "wrk": _cmd(["wrk", "-v"]), "python": platform.python_version()}
    phases.log(f"run dir {run_dir}; machine busy {info['busy_before']:.0f}% before start, load {info['load_before']}")

    procs = Procs(run_dir)
    results = {}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        consul = Consul(procs, consul_bin, run_dir, o.consul_mode)
        info["consul"] = consul.version()
        env = phases.Env(o, procs, consul, bin_dir, run_dir, (proxy_cpus, wrk_cpus, backend_cpus))
        backends = phases.setup_backends(env)
        phases.log(f"consul :{consul.port}, backends {backends.ports}")
        ref = None
        if "throughput" in o.only and o.setup_list:
            results["setups"] = setups.run(env, backends, o.setup_list)
            info["load_after_throughput"] = loadavg()
        elif "throughput" in o.only:
            tp, ref = phases.throughput(env, backends)
            results["throughput"] = tp
            results["summary"] = phases.summarize(tp)
            info["load_after_throughput"] = loadavg()
        gw = None
        if "propagation" in o.only:
            results["propagation"], gw = phases.propagation(env, backends)
        if "failover" in o.only:
            if gw is None:
                from benchlib.services import start_gateway
                gw, ready = start_gateway(procs, bin_dir, "gateway-default", consul, [phases.SERVICE], cpus=proxy_cpus)
                if ready is None:
                    raise HarnessError(f"gateway not ready within 30 s; see {gw.log_path}")
            if ref is None:
                from benchlib.services import start_reference
                ref = start_reference(procs, run_dir, backends.ports, cpus=proxy_cpus)
            results["failover"] = phases.failover(env, backends, [("gateway", gw), ("nginx", ref)])
        for p in [gw, ref]:
            if p is not None:
                procs.stop(p)
        if "scale" in o.only:
            results["scale"] = phases.scale(env)
    finally:
        procs.stop_all()
    info["load_after"] = loadavg()
    info["elapsed"] = time.monotonic() - t_begin
    text = render(o, info, results, argv)
    print()
    print(text)
    with open(os.path.join(run_dir, "report.md"), "w") as f:
        f.write(text)
    if o.results:
        with open(o.results, "w") as f:
            f.write(text)
        phases.log(f"wrote {o.results}")
    phases.log(f"done in {info['elapsed']:.0f} s; logs in {run_dir}")


def _consul_desc(mode):
    return ("one server agent, `-server -bootstrap-expect=1`, as in production" if mode == "server"
            else "`consul agent -dev`: in-memory, pretty-printed answers")


def render(o, info, results, argv):
    m = info["machine"]
    cmd = "bash bench/run.sh" + ("" if not argv else " " + " ".join(shlex.quote(a) for a in argv))
    out = [
        f"# Benchmark results{' (smoke mode: too short to mean anything)' if o.smoke else ''}",
        "",
        f"- Date: {info['date']}; command: `{cmd}`; repository at `{info['git']}`",
        f"- Machine: {m['nproc']} CPUs, {m['cpu']}, {m['mem_gib']:.0f} GiB, kernel {m['kernel']}, {m['os']}",
        f"- Load average before / after throughput / at the end: {info['load_before']} / "
        f"{info.get('load_after_throughput', '-')} / {info['load_after']}; CPUs busy in the second before the "
        f"run: {info['busy_before']:.0f}%",
        f"- Tools: {info['nginx']}, {info['wrk']}, {info.get('consul', '?')} ({_consul_desc(o.consul_mode)}), "
        f"Python {info['python']}",
        f"- Load: wrk {'per setup (below)' if o.setup_list else f'-t1 -c{o.connections}'}, {o.rounds} round(s) × "
        f"{o.duration} s per proxy (after {o.warmup} s warm-up), "
        f"proxies alternating; {o.backends} nginx backends; pinning: "
        f"{'per setup in the throughput phase, otherwise ' if o.setup_list else ''}{info['pin']}",
        f"- Whole run: {info['elapsed']:.0f} s",
        "",
    ]
    s = results.get("summary")
    gw_name = f"gateway --workers {o.workers[0]}" if o.workers else None
    if s:
        out += ["## Throughput, latency, CPU, memory (median over rounds; (×) = ratio to nginx)", "",
                report.throughput_table(s), "",
                "errors = wrk's HTTP ≥400 + socket errors, summed over rounds. CPU µs/req = (utime+stime of the proxy "
                "and all its child processes during the measured run) / requests. RSS under load = max of the "
                "process tree's VmRSS sampled every 100 ms; HWM = sum of VmHWM over the tree at the end.", "",
                report.round_ratios(results["throughput"]["rounds"]), "",
                "### Per round", "", report.rounds_table(results["throughput"]["rounds"]), "",
                report.noisy_note(results["throughput"]["rounds"]), "",
                "### Memory per process", "", report.memory_table(s), ""]
        profs = {k: v for k, v in results["throughput"].get("profiles", {}).items() if v}
        if profs:
            out += ["### Profiles (perf, one extra wrk run per proxy, not part of the figures above)", ""]
            for k, v in profs.items():
                per = (f"{v['syscalls']:.2f} syscalls and {v['switches']:.3f} context switches per request"
                       if v["syscalls"] is not None else "syscall counts unavailable")
                where = f"`{os.path.relpath(v['txt'], REPO)}`" if v["txt"] else "no profile"
                out.append(f"- {k}: {per}; flat profile {where}")
            out.append("")
    if "setups" in results:
        rows = setups.summarize(results["setups"])
        out += ["## Throughput by setup (gateway against nginx; ratios = gateway / nginx within rounds)", "",
                "\n".join(f"- {x['idx']}. {x['label']}: {setups.describe(x['factors'])}" for x in results["setups"]),
                "", report.setups_section(rows, [(x["idx"], x["rounds"]) for x in results["setups"]]), ""]
    if "propagation" in results:
        out += ["## Change propagation (gateway with default flags)", "",
                report.propagation_section(results["propagation"]), ""]
    if "failover" in results:
        out += ["## Failover", "", report.failover_section(results["failover"]), ""]
    if "scale" in results:
        for v in results["scale"]:
            if v.get("kind") == "tagged":
                out += [f"## Scale: {v['services']} services that opt in by tag", "", report.tagged_section(v), ""]
                continue
            out += [f"## Scale: instances {'with a passing check each' if v['checks'] else 'without checks'}", "",
                    report.scale_section(v), ""]
    out += ["## Targets", "", report.targets(s or {}, results.get("propagation"), results.get("failover"),
                                              results.get("scale"), gw_name), ""]
    return "\n".join(out)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except HarnessError as e:
        print(f"bench: harness failure: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
