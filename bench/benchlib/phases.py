"""The four measurements: throughput/latency/CPU/memory against nginx, change propagation,
failover, and scale. Each returns plain data for the report; none asserts on a timing."""

import os
import random
import resource
import signal
import subprocess
import statistics
import threading
import time
from contextlib import closing
from concurrent.futures import ThreadPoolExecutor

from . import load
from .procs import (HarnessError, RssSampler, consul_connections, cpu_seconds_between, machine_busy_seconds,
                    tree_cpu_ticks, tree_memory, wait_quiet, descendants,
                    tree_sched_ns, sched_seconds_between)
from .services import Backends, http_json, http_status, start_gateway, start_multi_backend, start_reference

SERVICE = "service-web"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Env:
    """What every phase needs: processes, Consul, binaries, options, CPU pinning."""

    def __init__(self, opts, procs, consul, bin_dir, run_dir, pins):
        self.opts, self.procs, self.consul, self.bin_dir, self.run_dir = opts, procs, consul, bin_dir, run_dir
        self.proxy_cpus, self.wrk_cpus, self.backend_cpus = pins


def setup_backends(env):
    backends = Backends(env.procs, env.run_dir, env.opts.backends, cpus=env.backend_cpus)
    with closing(env.consul.connection()) as c:
        for p in backends.ports:
            env.consul.agent_register(f"web-{p}", SERVICE, p, c)
    return backends


# ---- 1. throughput, latency, CPU, memory ----

def throughput(env, backends):
    o = env.opts
    ref = start_reference(env.procs, env.run_dir, backends.ports, cpus=env.proxy_cpus)
    gateways = []
    for w in o.workers:
        gw, ready_s = start_gateway(env.procs, env.bin_dir, f"gateway-w{w}", env.consul, [SERVICE],
                                    ["--workers", str(w)], cpus=env.proxy_cpus)
        if ready_s is None:
            raise HarnessError(f"gateway --workers {w} not ready within 30 s; see {gw.log_path}")
        gateways.append((f"gateway --workers {w}", gw))
    # The previous build, side by side with this one in the same rounds (per-request cost budgets).
    for w in (o.workers if o.baseline_bin_dir else []):
        gw, ready_s = start_gateway(env.procs, o.baseline_bin_dir, f"baseline-w{w}", env.consul, [SERVICE],
                                    ["--workers", str(w)], cpus=env.proxy_cpus)
        if ready_s is None:
            raise HarnessError(f"baseline gateway --workers {w} not ready within 30 s; see {gw.log_path}")
        gateways.append((f"baseline --workers {w}", gw))
    # Within a round nginx runs between the gateways; every other round runs in reverse order.
    order = gateways[:1] + [("nginx", ref)] + gateways[1:]
    for name, proc in order:
        url = f"http://127.0.0.1:{proc.port}/service-web/"
        if http_status(url) != 200:
            raise HarnessError(f"{name} does not route: GET {url} -> {http_status(url)}")
    idle = {name: tree_memory(proc.pid, "VmRSS") for name, proc in order}
    rounds = []
    quiet_deadline = time.monotonic() + o.wait_quiet  # one budget for the whole phase
    for r in range(o.rounds):
        if o.wait_quiet:  # before every round, so that all proxies of a round see the same machine
            wait_quiet(max(0.0, quiet_deadline - time.monotonic()), log=log)
        seq = order if r % 2 == 0 else list(reversed(order))
        for name, proc in seq:
            url = f"http://127.0.0.1:{proc.port}/service-web/"
            if o.warmup:
                load.wrk(url, o.warmup, o.connections, cpus=env.wrk_cpus)
            before = tree_cpu_ticks(proc.pid)
            s_before = tree_sched_ns(proc.pid)
            b_before = _backend_ticks(backends)
            w_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            m_before = machine_busy_seconds()
            with RssSampler(proc.pid) as rss:
                res = load.wrk(url, o.duration, o.connections, cpus=env.wrk_cpus)
            w_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            m_after = machine_busy_seconds()
            after = tree_cpu_ticks(proc.pid)
            sched_s = sched_seconds_between(s_before, tree_sched_ns(proc.pid))
            cpu_s = cpu_seconds_between(before, after)
            res["sched_us_per_req"] = sched_s * 1e6 / res["requests"] if res["requests"] else float("nan")
            wall = res["duration_us"] / 1e6
            res["util"] = {  # share of one CPU each party used during the run: who was the bottleneck
                "proxy": cpu_s / wall,
                "wrk": (w_after.ru_utime + w_after.ru_stime - w_before.ru_utime - w_before.ru_stime) / wall,
                "backends": cpu_seconds_between(b_before, _backend_ticks(backends)) / wall,
            }
            # Everything else that ran meanwhile (Consul, this harness, and other people's work on the machine).
            res["util"]["other"] = max(0.0, (m_after - m_before) / wall - sum(res["util"].values()))
            res.update(name=name, round=r + 1, cpu_s=cpu_s,
                       cpu_us_per_req=cpu_s * 1e6 / res["requests"] if res["requests"] else float("nan"),
                       rss_load_kb=rss.max_total_kb, rss_load_per=dict(rss.max_kb))
            rounds.append(res)
            log(f"round {r + 1} {name}: {res['rps']:.0f} req/s, p99 {res['p99'] / 1000:.2f} ms, "
                f"{res['cpu_us_per_req']:.1f} CPU-µs/req, errors {res['errors']:.0f}")
    hwm = {name: tree_memory(proc.pid, "VmHWM") for name, proc in order}
    profiles = {}
    if o.perf:  # after the measured rounds, so the sampling never costs a measured run anything
        for name, proc in order:
            profiles[name] = profile(env, name, proc)
    for name, proc in order:
        if name != "nginx":
            env.procs.stop(proc)
    return {"order": [n for n, _ in order], "rounds": rounds, "idle": idle, "hwm": hwm, "profiles": profiles}, ref


def profile(env, name, proc):
    """Under one more wrk run: a flat CPU profile (perf record, cpu-clock software event) and the
    syscalls and context switches per request (perf stat) of the proxy's process tree. Returns
    {"txt": report path, "syscalls": per request, "switches": per request}, or None if perf is unusable."""
    o = env.opts
    slug = name.replace(" ", "").replace("--", "-")
    data = os.path.join(env.run_dir, f"perf-{slug}.data")
    txt = os.path.join(env.run_dir, f"perf-{slug}.txt")
    stat = os.path.join(env.run_dir, f"perf-{slug}.stat")
    pids = ",".join(str(p) for p in descendants(proc.pid))
    perfs = []
    try:
        perfs.append(subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-o", data, "-p", pids],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        perfs.append(subprocess.Popen(["perf", "stat", "-x", ",", "-o", stat, "-e",
                                       "raw_syscalls:sys_enter,context-switches", "-p", pids],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    except OSError:
        for p in perfs:
            p.kill()
            p.wait()
        return None
    time.sleep(0.5)  # let perf attach before the load starts
    try:
        w = load.wrk(f"http://127.0.0.1:{proc.port}/service-web/", o.duration, o.connections, cpus=env.wrk_cpus)
    finally:
        for p in perfs:
            p.send_signal(signal.SIGINT)
        for p in perfs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    with open(txt, "w") as f:
        for sort in ("dso", "comm,dso,symbol"):  # kernel vs user share first, then the hot symbols
            r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
                                "--percent-limit", "0.3"], stdout=f, stderr=subprocess.DEVNULL, timeout=120)
    counts = {}
    try:
        with open(stat) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) > 2 and parts[0].replace(".", "").isdigit():
                    counts[parts[2]] = float(parts[0])
    except OSError:
        pass
    n = w["requests"] or 1
    out = {"txt": txt if r.returncode == 0 else None,
           "syscalls": counts.get("raw_syscalls:sys_enter", 0) / n if counts else None,
           "switches": counts.get("context-switches", 0) / n if counts else None}
    per = f"{out['syscalls']:.2f} syscalls, {out['switches']:.3f} context switches" if counts else "no counts"
    log(f"profile of {name}: {txt}; per request: {per}")
    return out


def _backend_ticks(backends):
    out = {}
    for proc in backends.by_port.values():
        out.update(tree_cpu_ticks(proc.pid))
    return out


def summarize(tp):
    out = {}
    for name in tp["order"]:
        rs = [r for r in tp["rounds"] if r["name"] == name]
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        per = {}
        for r in rs:
            for k, v in r["rss_load_per"].items():
                per[k] = max(per.get(k, 0), v)
        out[name] = {
            "rps": med("rps"), "p50": med("p50"), "p99": med("p99"), "p999": med("p999"),
            "cpu_us_per_req": med("cpu_us_per_req"), "errors": sum(r["errors"] for r in rs),
            "requests": sum(r["requests"] for r in rs),
            "rss_load_kb": max(r["rss_load_kb"] for r in rs), "rss_load_per": per,
            "hwm_kb": sum(tp["hwm"][name].values()), "hwm_per": tp["hwm"][name],
            "idle_kb": sum(tp["idle"][name].values()), "idle_per": tp["idle"][name],
            "rps_spread": (min(r["rps"] for r in rs), max(r["rps"] for r in rs)),
        }
    return out


# ---- 2. change propagation ----

def propagation(env, backends):
    o = env.opts
    gw, ready_s = start_gateway(env.procs, env.bin_dir, "gateway-default", env.consul, [SERVICE], cpus=env.proxy_cpus)
    if ready_s is None:
        raise HarnessError(f"gateway not ready within 30 s; see {gw.log_path}")
    victim = backends.ports[-1]
    sid = f"web-{victim}"
    dereg, reg, dereg_log, reg_log, call_ms, unresolved = [], [], [], [], [], []
    dereg_call, reg_call = [], []  # the same, measured from the call's start
    conn = env.consul.connection()
    with load.Prober(gw.port, f"/{SERVICE}/", threads=o.prober_threads) as pr:
        if not _all_seen(pr, set(backends.ports), 10):
            log("propagation: the gateway never answered from every backend; skipping")
            return {"skipped": "the gateway never answered from every backend within 10 s"}, gw
        t_start = time.monotonic()
        n_start = pr.responses
        pr.take()
        for i in range(o.prop_reps):
            time.sleep(random.uniform(0.05, 0.2))
            pr.take()
            tc = time.monotonic()
            env.consul.agent_deregister(sid, conn)
            t0 = time.monotonic()
            call_ms.append((t0 - tc) * 1e3)
            d, _ = load.wait_gone(pr, victim, t0, o.quiet, o.prop_timeout)
            dereg.append(d)
            dereg_call.append(None if d is None else d + t0 - tc)
            line = gw.lines_since(tc, f"removed 127.0.0.1:{victim}")
            dereg_log.append(line[0] - t0 if line else None)

            time.sleep(random.uniform(0.05, 0.2))
            pr.take()
            tc = time.monotonic()
            env.consul.agent_register(sid, SERVICE, victim, conn)
            t0 = time.monotonic()
            call_ms.append((t0 - tc) * 1e3)
            d, _ = load.wait_first(pr, victim, t0, o.prop_timeout)
            reg.append(d)
            reg_call.append(None if d is None else d + t0 - tc)
            line = gw.lines_since(tc, f"added 127.0.0.1:{victim}")
            reg_log.append(line[0] - t0 if line else None)
            if d is None:  # make sure the next repetition starts from three routable instances
                unresolved.append(i)
                _all_seen(pr, {victim}, o.prop_timeout)
            log(f"propagation {i + 1}/{o.prop_reps}: deregistration {_ms(dereg[-1])}, registration {_ms(reg[-1])}")
        elapsed = time.monotonic() - t_start
        rate = (pr.responses - n_start) / elapsed
    conn.close()
    return {"dereg": dereg, "reg": reg, "dereg_call": dereg_call, "reg_call": reg_call, "dereg_log": dereg_log, "reg_log": reg_log, "call_ms": call_ms,
            "prober_errors": pr.errors, "prober_threads": o.prober_threads, "elapsed": elapsed,
            "timeout": o.prop_timeout, "quiet": o.quiet, "victim": victim,
            "rate": rate}, gw


def _all_seen(pr, ports, timeout):
    seen = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.01)
        seen.update(e[2] for e in pr.take())
        if ports <= seen:
            return True
    return False


def _ms(s):
    return "timeout" if s is None else f"{s * 1e3:.1f} ms"


# ---- 3. failover ----

def failover(env, backends, targets):
    """targets: [(name, proc)]; under wrk load, SIGKILL one still-registered backend at 25% of the run."""
    o = env.opts
    victim = backends.ports[-1]
    out = []
    for name, proc in targets:
        url = f"http://127.0.0.1:{proc.port}/service-web/"
        result = {}

        def run():
            try:
                result["wrk"] = load.wrk(url, o.failover_duration, o.connections, cpus=env.wrk_cpus)
            except HarnessError as e:
                result["error"] = e

        t = threading.Thread(target=run)
        t.start()
        time.sleep(o.failover_duration * 0.25)
        backends.kill(victim)
        t.join()
        if "error" in result:
            raise result["error"]
        w = result["wrk"]
        out.append({"name": name, "requests": w["requests"], "status": w["status"], "socket": w["socket_errors"],
                    "errors": w["errors"], "detail": {k: w[k] for k in ("connect", "read", "write", "timeout")},
                    "p99": w["p99"], "max": w["max"]})
        log(f"failover {name}: {w['errors']:.0f} client-visible errors of {w['requests']:.0f} requests")
        backends.start(victim)  # same port, still registered: back to three live instances
        time.sleep(0.5)
    return {"results": out, "duration": o.failover_duration, "victim": victim}


# ---- 4. scale ----

def scale(env):
    """Both kinds of registration, one after the other, each with its own gateway: instances with a
    passing check of their own (as the registrator registers them) and instances without any check
    (a watcher may have to treat those differently: registering one moves no check index)."""
    o = env.opts
    ports = [int(p) for p in _ports(o.scale_instances)]
    start_multi_backend(env.procs, env.run_dir, "scale-backends", ports, cpus=env.backend_cpus)
    out = []
    for checks in o.scale_checks:
        out.append(scale_one(env, ports, checks))
    return out


def scale_one(env, ports, checks):
    o = env.opts
    n, k = o.scale_services, o.scale_instances
    kind = "checks" if checks else "nocheck"
    names = [f"svc-{kind}-{i:04d}" for i in range(n)]
    nodes = [f"bench-{kind}-node-{j}" for j in range(k)]
    jobs = [(nodes[j], f"{s}-{j}", s, ports[j], checks) for s in names for j in range(k)]

    t0 = time.monotonic()
    local, conns = threading.local(), []

    def register(job):
        if not hasattr(local, "c"):
            local.c = env.consul.connection()
            conns.append(local.c)
        env.consul.catalog_register(*job, conn=local.c)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(register, jobs))
    for c in conns:
        c.close()
    reg_s = time.monotonic() - t0
    log(f"scale ({kind}): registered {n} services x {k} instances in {reg_s:.1f} s")

    t0 = time.monotonic()
    gw, _ = start_gateway(env.procs, env.bin_dir, f"gateway-scale-{kind}", env.consul, names, wait_ready=False)
    conns_max, ready_s = {}, None
    deadline = t0 + o.scale_timeout
    while time.monotonic() < deadline:
        if not gw.alive():
            raise HarnessError(f"the gateway exited at scale ({gw.popen.returncode}); see {gw.log_path}")
        if http_status(f"http://127.0.0.1:{gw.admin}/readyz", timeout=1) == 200:
            ready_s = time.monotonic() - t0
            break
        for c, v in consul_connections(gw.pid, env.consul.port).items():
            conns_max[c] = max(conns_max.get(c, 0), v)
        time.sleep(0.02)
    time.sleep(0.5 if ready_s else 0)
    conns_now = consul_connections(gw.pid, env.consul.port)
    for c, v in conns_now.items():
        conns_max[c] = max(conns_max.get(c, 0), v)
    loaded, full, stale, full_names = _loaded(gw, k)
    log(f"scale ({kind}): ready after {_s(ready_s)}; {loaded}/{n} services loaded ({full} with all {k}), "
        f"connections to Consul now {conns_now}, max {conns_max}")

    changes = []
    # Services the gateway has loaded with all their instances, spread over the list; one instance of
    # each (a different one every time). If it has loaded none, there is nothing to measure.
    for i in range(min(o.scale_reps, len(full_names))):
        target = full_names[(len(full_names) // 2 + i * len(full_names) // o.scale_reps) % len(full_names)]
        changes.append(_scale_change(env, gw, target, ports, k, i % k, nodes))
    rss = tree_memory(gw.pid, "VmRSS")
    hwm = tree_memory(gw.pid, "VmHWM")
    env.procs.stop(gw)
    with closing(env.consul.connection()) as c:  # leave Consul as it was for the next variant
        for node in nodes:
            env.consul.must("PUT", "/v1/catalog/deregister", {"Node": node}, c)
    return {"checks": checks, "services": n, "instances": k, "register_s": reg_s, "ready_s": ready_s, "timeout": o.scale_timeout,
            "loaded": loaded, "full": full, "stale": stale, "conns_now": conns_now, "conns_max": conns_max,
            "changes": changes, "rss": rss, "hwm": hwm}


def _ports(k):
    from .procs import free_port
    return [free_port() for _ in range(k)]


def _loaded(gw, k):
    try:
        status, body = http_json(f"http://127.0.0.1:{gw.admin}/services", timeout=10)
    except Exception:  # noqa: BLE001 - report, never crash the harness on the gateway's admin output
        return 0, 0, 0, []
    services = (body or {}).get("services", []) if isinstance(body, dict) else []
    loaded = sum(1 for s in services if s.get("instances"))
    full_names = sorted(s.get("service") for s in services if len(s.get("instances") or []) == k)
    stale = sum(1 for s in services if s.get("stale"))
    return loaded, len(full_names), stale, full_names


def _scale_change(env, gw, service, ports, k, victim_j, nodes):
    o = env.opts
    victim = ports[victim_j]
    with load.Prober(gw.port, f"/{service}/", threads=o.prober_threads) as pr:
        if not _all_seen(pr, set(ports), 10):
            return {"service": service, "skipped": f"/{service}/ was not answered by all {k} instances within 10 s"}
        pr.take()
        tc = time.monotonic()
        env.consul.catalog_deregister(nodes[victim_j], f"{service}-{victim_j}")
        t0 = time.monotonic()
        d, _ = load.wait_gone(pr, victim, t0, o.quiet, o.prop_timeout)
        line = gw.lines_since(tc, f"{service}: ")
        errors = pr.errors
    log(f"scale: one change to {service} propagated in {_ms(d)}")
    return {"service": service, "dereg": d, "log": (line[0] - t0) if line else None, "prober_errors": errors}


def _s(v):
    return "never (timeout)" if v is None else f"{v:.2f} s"
