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
from .procs import (HarnessError, RssSampler, bytes_sent_from, comm, consul_connections, cpu_seconds_between,
                    proc_field, machine_busy_seconds, tree_cpu_ticks, tree_memory, wait_quiet, wait_until, descendants,
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
            res = measure(env, name, proc, list(backends.by_port.values()), r + 1)
            rounds.append(res)
    hwm = {name: tree_memory(proc.pid, "VmHWM") for name, proc in order}
    profiles = {}
    if o.perf:  # after the measured rounds, so the sampling never costs a measured run anything
        for name, proc in order:
            profiles[name] = profile(env, name, proc)
    for name, proc in order:
        if name != "nginx":
            env.procs.stop(proc)
    return {"order": [n for n, _ in order], "rounds": rounds, "idle": idle, "hwm": hwm, "profiles": profiles}, ref


def measure(env, name, proc, backend_procs, rnd, connections=None, threads=1):
    """One measured wrk run against `proc` (after an unmeasured warm-up): wrk's figures plus the proxy
    tree's CPU per request (ticks and schedstat; also without a `watcher` process), and how much CPU
    the proxy, wrk, the backends (`backend_procs`) and everything else used meanwhile."""
    o = env.opts
    connections = connections or o.connections
    url = f"http://127.0.0.1:{proc.port}/service-web/"
    if o.warmup:
        load.wrk(url, o.warmup, connections, threads=threads, cpus=env.wrk_cpus)
    before = tree_cpu_ticks(proc.pid)
    s_before = tree_sched_ns(proc.pid)
    b_before = _backend_ticks(backend_procs)
    w_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    m_before = machine_busy_seconds()
    with RssSampler(proc.pid) as rss:
        res = load.wrk(url, o.duration, connections, threads=threads, cpus=env.wrk_cpus)
    w_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m_after = machine_busy_seconds()
    after = tree_cpu_ticks(proc.pid)
    s_after = tree_sched_ns(proc.pid)
    sched_s = sched_seconds_between(s_before, s_after)
    watchers = {p for p in after if comm(p) == "watcher"}
    sched_nw = sched_seconds_between({k: v for k, v in s_before.items() if k[0] not in watchers},
                                     {k: v for k, v in s_after.items() if k[0] not in watchers})
    cpu_s = cpu_seconds_between(before, after)
    # How the proxy's CPU split over its threads and processes (e.g. two workers: 50/50, or one
    # doing most of the work): the top shares, with each task's name.
    per = {k: v - s_before.get(k, 0) for k, v in s_after.items()}
    total = sum(per.values()) or 1
    res["task_shares"] = [(_task_comm(*k), d / total) for k, d in sorted(per.items(), key=lambda kv: -kv[1])[:3]]
    n = res["requests"]
    res["sched_us_per_req"] = sched_s * 1e6 / n if n else float("nan")
    res["sched_us_per_req_nowatcher"] = sched_nw * 1e6 / n if n else float("nan")
    wall = res["duration_us"] / 1e6
    res["util"] = {  # share of one CPU each party used during the run: who was the bottleneck
        "proxy": cpu_s / wall,
        "wrk": (w_after.ru_utime + w_after.ru_stime - w_before.ru_utime - w_before.ru_stime) / wall,
        "backends": cpu_seconds_between(b_before, _backend_ticks(backend_procs)) / wall,
    }
    # Everything else that ran meanwhile (Consul, this harness, and other people's work on the machine).
    res["util"]["other"] = max(0.0, (m_after - m_before) / wall - sum(res["util"].values()))
    res.update(name=name, round=rnd, cpu_s=cpu_s, cpu_us_per_req=cpu_s * 1e6 / n if n else float("nan"),
               rss_load_kb=rss.max_total_kb, rss_load_per=dict(rss.max_kb))
    log(f"round {rnd} {name}: {res['rps']:.0f} req/s, p99 {res['p99'] / 1000:.2f} ms, "
        f"{res['cpu_us_per_req']:.1f} CPU-µs/req, errors {res['errors']:.0f}")
    return res


def _task_comm(pid, tid):
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def profile(env, name, proc, connections=None, threads=1):
    """Under one more wrk run: a flat CPU profile (perf record, cpu-clock software event) and the
    syscalls and context switches per request (perf stat) of the proxy's process tree. Returns
    {"txt": report path, "syscalls": per request, "switches": per request}, or None if perf is unusable."""
    o = env.opts
    connections = connections or o.connections
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
        w = load.wrk(f"http://127.0.0.1:{proc.port}/service-web/", o.duration, connections, threads=threads,
                     cpus=env.wrk_cpus)
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


def _backend_ticks(backend_procs):
    out = {}
    for proc in backend_procs:
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
    (a watcher may have to treat those differently: registering one moves no check index); then
    services that opt in by tag, at each size of --scale-tagged."""
    o = env.opts
    ports = [int(p) for p in _ports(max(o.scale_instances, o.scale_tagged_instances))]
    start_multi_backend(env.procs, env.run_dir, "scale-backends", ports, cpus=env.backend_cpus)
    out = []
    for checks in o.scale_checks:
        out.append(scale_one(env, ports[:o.scale_instances], checks))
    for n in o.scale_tagged:
        out.append(scale_tagged(env, ports[:o.scale_tagged_instances], n))
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

    changes = _spread_changes(env, gw, full_names, ports, k, nodes, o.scale_reps)
    rss = tree_memory(gw.pid, "VmRSS")
    hwm = tree_memory(gw.pid, "VmHWM")
    env.procs.stop(gw)
    with closing(env.consul.connection()) as c:  # leave Consul as it was for the next variant
        for node in nodes:
            env.consul.must("PUT", "/v1/catalog/deregister", {"Node": node}, c)
    return {"kind": kind, "checks": checks, "services": n, "instances": k, "register_s": reg_s, "ready_s": ready_s, "timeout": o.scale_timeout,
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


# ---- 4b. scale, routes from tags ----

TAGGED_PREFIX = "svc-tag-"


def scale_tagged(env, ports, n):
    """n services that opt in with the tag `gateway` (route /svc-tag-<i>/), k instances each with a
    passing check of its own, registered before the gateway starts (no --services but service-web,
    whose route a prober uses to see whether requests stall while routes load). Measures: gateway
    start → every route live (log lines, confirmed by GET /routes), connections to Consul, a new
    service routable after its TTL check passes, one instance change, and the cost of a change
    (CPU of the watcher, Consul and the gateway; bytes Consul sends the watcher) over K check flips,
    and of a route change over K tag changes."""
    o = env.opts
    k = len(ports)
    names = [f"{TAGGED_PREFIX}{i:05d}" for i in range(n)]
    nodes = [f"bench-tagged-node-{j}" for j in range(k)]
    instances = [{"node": nodes[j], "sid": f"{s}-{j}", "name": s, "port": ports[j], "tags": ["gateway"],
                  "check": "passing"} for s in names for j in range(k)]
    reg_s = env.consul.register_many(instances)
    log(f"scale (tagged): registered {n} services x {k} instances (tag gateway, a passing check each) in {reg_s:.1f} s")
    sizes = _answer_sizes(env.consul)
    # Consul's own cost of a check flip with no watcher reading (the write alone), for comparison.
    flips = _flip_plan(names, nodes, ports, o.scale_cost_changes)
    idle_s = 0.5 if o.smoke else 3.0  # each process's CPU at rest is measured over this long
    write_only = _flip_cost(env, None, flips, idle_s)

    extra = ["--workers", str(o.scale_workers)] if o.scale_workers else []
    t0 = time.monotonic()
    gw, _ = start_gateway(env.procs, env.bin_dir, "gateway-scale-tagged", env.consul, [SERVICE], extra,
                          wait_ready=False)
    conns_max, ready_s, logged_s, live_s, live = {}, None, None, None, 0
    deadline = t0 + o.scale_timeout
    added, last_added, pos = 0, None, 0
    # One request every 5 ms to the static route: a stall of the gateway's event loop shows as a gap.
    with load.Prober(gw.port, f"/{SERVICE}/", threads=1, interval=0.005) as pr:
        while time.monotonic() < deadline:
            if not gw.alive():
                raise HarnessError(f"the gateway exited at scale ({gw.popen.returncode}); see {gw.log_path}")
            if ready_s is None and http_status(f"http://127.0.0.1:{gw.admin}/readyz", timeout=1) == 200:
                ready_s = time.monotonic() - t0
            if logged_s is None:
                m, t, pos = gw.count_since(pos, "route added: /" + TAGGED_PREFIX)
                added, last_added = added + m, t or last_added
                if added >= n:
                    logged_s = last_added - t0
            if logged_s is not None:
                live = _live_routes(gw, k)
                if live >= n:
                    live_s = time.monotonic() - t0
                    break
            for c, v in consul_connections(gw.pid, env.consul.port).items():
                conns_max[c] = max(conns_max.get(c, 0), v)
            time.sleep(0.02 if logged_s is None else 0.25)
        stall = _stall(pr.take())
    if live_s is None:
        live = _live_routes(gw, k)
    time.sleep(0.5)
    conns_now = consul_connections(gw.pid, env.consul.port)
    for c, v in conns_now.items():
        conns_max[c] = max(conns_max.get(c, 0), v)
    log(f"scale (tagged): /readyz after {_s(ready_s)}; last route logged after {_s(logged_s)}; "
        f"{live}/{n} routes live with all {k} instances after {_s(live_s)}; connections to Consul now {conns_now}, "
        f"max {conns_max}; longest wait for a /{SERVICE}/ response meanwhile {stall['max_gap'] * 1e3:.0f} ms")

    new = [_new_service(env, gw, ports[i % k], i) for i in range(o.scale_reps)] if live_s is not None else []
    cost = _flip_cost(env, gw, flips, idle_s) if live_s is not None else None
    route_cost = (_flip_cost(env, gw, _route_plan(names, nodes, ports, o.scale_cost_changes), idle_s)
                  if live_s is not None else None)
    _, full, _, full_names = _loaded(gw, k)
    changes = _spread_changes(env, gw, full_names, ports, k, nodes, o.scale_reps)
    rss = tree_memory(gw.pid, "VmRSS")
    hwm = tree_memory(gw.pid, "VmHWM")
    env.procs.stop(gw)
    with closing(env.consul.connection()) as c:
        for node in nodes:
            env.consul.must("PUT", "/v1/catalog/deregister", {"Node": node}, c)
        for i in range(o.scale_reps):
            env.consul.agent_deregister(f"svc-new-{i}", c)
    return {"kind": "tagged", "checks": True, "services": n, "instances": k, "register_s": reg_s,
            "ready_s": live_s, "readyz_s": ready_s, "logged_s": logged_s, "live": live, "timeout": o.scale_timeout,
            "loaded": live, "full": full, "stale": 0, "conns_now": conns_now, "conns_max": conns_max,
            "stall": stall, "workers": o.scale_workers, "new": new, "changes": changes, "cost": cost,
            "write_only": write_only, "route_cost": route_cost, "sizes": sizes, "rss": rss, "hwm": hwm}


def _answer_sizes(consul):
    """Bytes of the cluster-wide answers the multiplexed watcher reads (as Consul sends them: no gzip)."""
    out = {}
    with closing(consul.connection(timeout=60)) as c:
        for path in ("/v1/health/state/any", "/v1/catalog/services"):
            out[path] = len(consul.must("GET", path, None, c))
    return out


def _live_routes(gw, k):
    """Routes /svc-tag-* that GET /routes lists with all k instances."""
    try:
        status, body = http_json(f"http://127.0.0.1:{gw.admin}/routes", timeout=30)
    except Exception:  # noqa: BLE001 - report, never crash the harness on the gateway's admin output
        return 0
    routes = (body or {}).get("routes", []) if isinstance(body, dict) else []
    return sum(1 for r in routes if str(r.get("service", "")).startswith(TAGGED_PREFIX) and r.get("instances") == k)


def _stall(events):
    """The longest a request to an existing route waited while routes loaded: the largest latency,
    and the longest gap between two responses, after the first 200."""
    events = sorted(events, key=lambda e: e[1])
    first = next((i for i, e in enumerate(events) if e[3] == 200), None)
    if first is None:
        return {"max_gap": 0.0, "max_latency": 0.0, "responses": 0, "errors": 0}
    ev = events[first:]
    gaps = [b[1] - a[1] for a, b in zip(ev, ev[1:])]
    return {"max_gap": max(gaps, default=0.0), "max_latency": max(e[1] - e[0] for e in ev), "responses": len(ev),
            "errors": sum(1 for e in ev if e[3] != 200)}


def _new_service(env, gw, port, i):
    """A new service opts in (tag gateway) with a TTL check, critical at first; once its route answers
    503 (listed, no instance), the check is set passing. Result: the time to its first 200 through
    the gateway, from the pass call's return (and from its start), and the registration → route
    listed time."""
    o = env.opts
    name, sid = f"svc-new-{i}", f"svc-new-{i}"
    with closing(env.consul.connection()) as c, load.Prober(gw.port, f"/{name}/", threads=o.prober_threads) as pr:
        tr = time.monotonic()
        env.consul.must("PUT", "/v1/agent/service/register",
                        {"ID": sid, "Name": name, "Address": "127.0.0.1", "Port": port, "Tags": ["gateway"],
                         "Check": {"CheckID": f"service:{sid}", "TTL": "10m", "Status": "critical"}}, c)
        listed = None
        deadline = tr + o.prop_timeout
        while listed is None and time.monotonic() < deadline:
            time.sleep(0.002)
            for ev in pr.take():
                if ev[3] == 503:
                    listed = ev[1] - tr
                    break
        if listed is None:
            return {"service": name, "skipped": f"/{name}/ never answered 503 (route, no instance) within "
                                                f"{o.prop_timeout:.0f} s"}
        time.sleep(random.uniform(0.05, 0.2))
        pr.take()
        tc = time.monotonic()
        env.consul.must("PUT", f"/v1/agent/check/pass/service:{sid}", None, c)
        t0 = time.monotonic()
        d, _ = load.wait_first(pr, port, t0, o.prop_timeout)
    log(f"scale (tagged): {name} listed {listed * 1e3:.1f} ms after registering; first 200 {_ms(d)} after its "
        f"check passed (call {1e3 * (t0 - tc):.1f} ms)")
    return {"service": name, "listed": listed, "routable": d, "routable_call": None if d is None else d + t0 - tc,
            "call_ms": (t0 - tc) * 1e3}


def _flip_plan(names, nodes, ports, count):
    """count instance changes: instance 0 of a service goes critical, then passing again (two
    changes), on count/2 services spread over the list. Each: (node, sid, service, port, check
    status, tags, the gateway's log line that shows it)."""
    plan = []
    for s in _spread(names, count):
        plan += [(nodes[0], f"{s}-0", s, ports[0], "critical", ["gateway"], f"{s}: "),
                 (nodes[0], f"{s}-0", s, ports[0], "passing", ["gateway"], f"{s}: ")]
    return plan


def _route_plan(names, nodes, ports, count):
    """count route changes: instance 0 of a service also declares `urlprefix-/alt-<service>`, then
    no longer (two changes: a route added, a route removed; the table is rebuilt for each)."""
    plan = []
    for s in _spread(names, count, offset=1):
        plan += [(nodes[0], f"{s}-0", s, ports[0], "passing", ["gateway", f"urlprefix-/alt-{s}"],
                  f"route added: /alt-{s} "),
                 (nodes[0], f"{s}-0", s, ports[0], "passing", ["gateway"], f"route removed: /alt-{s} ")]
    return plan


def _spread_changes(env, gw, full_names, ports, k, nodes, reps):
    """One change each on services the gateway has loaded with all their instances, spread over the
    list, one instance of each (a different one every time); none if it has loaded none."""
    changes = []
    for i in range(min(reps, len(full_names))):
        target = full_names[(len(full_names) // 2 + i * len(full_names) // reps) % len(full_names)]
        changes.append(_scale_change(env, gw, target, ports, k, i % k, nodes))
    return changes


def _spread(names, count, offset=0):
    pairs = max(1, count // 2)
    step = max(1, len(names) // pairs)
    return [names[(p * step + step // 2 + offset) % len(names)] for p in range(pairs)]


def _proc_io(pid, key="rchar"):
    return proc_field(pid, "io", key)


def _watcher_pid(gw):
    kids = [p for p in descendants(gw.pid) if p != gw.pid and comm(p) == "watcher"]
    return kids[0] if kids else None


def _flip_cost(env, gw, plan, idle_s):
    """CPU (scheduler run time) of the watcher, Consul and the gateway per change over the check
    flips in plan, minus what each used at rest over the same time (measured just before, for
    idle_s); and the bytes Consul sent per change on its HTTP connections to 127.0.0.1, the gateway's
    tree (tcp_info bytes_sent; the harness talks from 127.0.0.2). Without gw: Consul's cost of the
    writes alone (no watcher reading), each flip followed by a 150 ms pause. With gw: each flip waits
    for the gateway's log line of the service's change."""
    watcher = _watcher_pid(gw) if gw else None
    parties = {"consul": env.consul.proc.pid}
    if gw:
        parties["gateway"] = gw.pid  # its own threads only below: the watcher is listed apart
        if watcher:
            parties["watcher"] = watcher

    def snap():
        out = {}
        for name, pid in parties.items():
            if name == "gateway":
                out[name] = sum(v for (p, _), v in tree_sched_ns(pid).items() if p == pid)
            else:
                out[name] = sum(tree_sched_ns(pid).values())
        out["sent"] = bytes_sent_from(env.consul.port)
        return out

    a = snap()
    time.sleep(idle_s)
    b = snap()
    idle_rate = {k: (b[k] - a[k]) / idle_s for k in parties}
    waits, missed = [], 0
    with closing(env.consul.connection()) as c:
        t_start = time.monotonic()
        s0 = snap()
        for node, sid, name, port, status, tags, want in plan:
            tc = time.monotonic()
            env.consul.set_check(node, sid, name, port, status, tags, c)
            if gw is None:
                time.sleep(0.15)
                continue
            # The gateway's line: `svc-tag-00012: 3 -> 2 instances, removed ...`, `route added: /alt-...`
            seen = wait_until(lambda: gw.lines_since(tc, want), env.opts.prop_timeout, 0.002)
            if seen:
                waits.append(seen[0] - tc)
            else:
                missed += 1
            time.sleep(0.05)  # let the readers finish what follows the change (answers in flight)
        elapsed = time.monotonic() - t_start
        s1 = snap()
    n = len(plan)
    per = {}
    for k in parties:
        used = (s1[k] - s0[k]) / 1e9
        per[k] = {"raw_ms": used * 1e3 / n, "net_ms": max(0.0, used - idle_rate[k] / 1e9 * elapsed) * 1e3 / n,
                  "idle_ms_per_s": idle_rate[k] / 1e6}
    sent = sum(v - s0["sent"].get(c, 0) for c, v in s1["sent"].items())
    closed = len(set(s0["sent"]) - set(s1["sent"]))
    out = {"changes": n, "elapsed": elapsed, "per_change": per, "missed": missed,
           "sent_per_change": sent / n if gw else None, "closed_conns": closed, "seen_ms": [w * 1e3 for w in waits]}
    desc = ", ".join(f"{k} {v['net_ms']:.2f} ms" for k, v in per.items())
    log(f"scale (tagged): cost per change over {n} check flips{' (no gateway: the writes alone)' if not gw else ''}: "
        f"{desc}" + (f"; Consul sent {sent / n / 1e3:.0f} kB per change to the gateway's tree" if gw else ""))
    return out

