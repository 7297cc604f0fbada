"""Setups: the throughput comparison under other setups than the pinned one-worker one (issue 14,
item 6): defaults against defaults, and a matrix that changes one factor at a time, to find out
which setup differences move the gateway-to-nginx ratio.

A setup is a set of factors (a spec `key=value,...`; keys left out keep the project's setup):

- `pin`: `split` (proxy on CPU 0, wrk on CPU 1, backends unpinned) or `none` (nothing pinned);
- `gw`: the gateway's `--workers`, or `default` (no flag: one worker per CPU it may use);
- `ngx`: nginx's `worker_processes` (`1`, `auto`, ...);
- `backends`: `per-instance` (one single-process nginx per port, the project's setup), `one` (one
  nginx process, `master_process off`, serving every port) or `one-auto` (one nginx, a master and
  `worker_processes auto`, every worker serving every port);
- `upstream`: nginx's proxy configuration, `tuned` (keepalive 32, `random`, HTTP/1.1) or `default`
  (an upstream block and a plain `proxy_pass`: round-robin, HTTP/1.0, a new connection per request);
- `ka`: with `upstream=tuned`, nginx's `keepalive` (idle upstream connections each worker keeps,
  over all instances; 32 in the project's setup);
- `wrk`: wrk's threads × connections, `1x32` (the project's) or e.g. `2x64`.

Each setup starts its own gateway and nginx (and backends if the topology changes), runs
`--rounds` rounds with the two proxies alternating (every other round in reverse order), then stops
them. The backends are registered once (same ports whatever the topology), and the per-instance
backends are restored at the end for the phases that follow.
"""

import copy
import os
import statistics
import time

from . import phases
from .procs import HarnessError, wait_quiet
from .services import http_status, start_gateway, start_multi_backend, start_reference

# The project's own setup (bench/README.md, "The setup"): every key a spec may leave out.
PROJECT = {"pin": "split", "gw": "1", "ngx": "1", "backends": "per-instance", "upstream": "tuned", "ka": "32",
           "wrk": "1x32"}
VALUES = {"pin": ("split", "none"), "backends": ("per-instance", "one", "one-auto"),
          "upstream": ("tuned", "default")}

# Defaults against defaults: (a) nginx tuned, (b) nginx untuned, (c) (a) with one backend process.
DEFAULTS = [
    ("(a) defaults, nginx tuned", "pin=none,gw=default,ngx=auto"),
    ("(b) defaults, nginx default proxy config", "pin=none,gw=default,ngx=auto,upstream=default"),
    ("(c) = (a), backends in one process", "pin=none,gw=default,ngx=auto,backends=one"),
]
# One factor at a time, from the project's pinned setup and from the same unpinned, then a guess at
# an independent harness's setup (unpinned, nginx auto, one backend process, wrk -t2 -c64), the
# defaults, and the defaults with a keepalive pool that covers the client connections.
MATRIX = [
    ("P: the project's setup", ""),
    ("U: P unpinned", "pin=none"),
    ("U + nginx auto", "pin=none,ngx=auto"),
    ("U + gateway default workers", "pin=none,gw=default"),
    ("U + backends in one process", "pin=none,backends=one"),
    ("U + wrk -t2 -c64", "pin=none,wrk=2x64"),
    ("U + nginx keepalive 128", "pin=none,ka=128"),
    ("P + nginx keepalive 128", "ka=128"),
    ("P + wrk -t2 -c64", "wrk=2x64"),
    ("P + backends in one process", "backends=one"),
    ("I: U + nginx auto + backends one + wrk -t2 -c64", "pin=none,ngx=auto,backends=one,wrk=2x64"),
] + DEFAULTS + [("(a) + nginx keepalive 128", "pin=none,gw=default,ngx=auto,ka=128")]
PRESETS = {"defaults": DEFAULTS, "matrix": MATRIX}


def parse(text):
    """`--setups` text: a preset name (defaults, matrix) or specs separated by `;`, each optionally
    `label:spec`. Returns [(label, factors dict)]. Raises ValueError with a readable message."""
    if text in PRESETS:
        items = PRESETS[text]
    else:
        items = []
        for part in (x.strip() for x in text.split(";")):
            if part:
                label, _, spec = part.rpartition(":")
                items.append((label or None, spec))
    out = []
    for i, (label, spec) in enumerate(items):
        f = dict(PROJECT)
        for kv in (x.strip() for x in spec.split(",")):
            if not kv:
                continue
            k, sep, v = kv.partition("=")
            if not sep or k not in PROJECT:
                raise ValueError(f"setup {spec!r}: {kv!r} is not key=value with a key of {', '.join(PROJECT)}")
            if k in VALUES and v not in VALUES[k]:
                raise ValueError(f"setup {spec!r}: {k} takes {', '.join(VALUES[k])}")
            if k == "gw" and v != "default" and not v.isdigit():
                raise ValueError(f"setup {spec!r}: gw takes a worker count or default")
            if k == "ka" and not (v.isdigit() and int(v) > 0):
                raise ValueError(f"setup {spec!r}: ka takes a connection count")
            if k == "ngx" and v != "auto" and not v.isdigit():
                raise ValueError(f"setup {spec!r}: ngx takes a worker count or auto")
            if k == "wrk":
                t, _, c = v.partition("x")
                if not (t.isdigit() and c.isdigit() and 0 < int(t) <= int(c)):
                    raise ValueError(f"setup {spec!r}: wrk takes THREADSxCONNECTIONS, e.g. 2x64")
            f[k] = v
        out.append((label or f"S{i + 1}", f))
    return out


def describe(f):
    """One line naming every factor, for the report."""
    t, c = f["wrk"].split("x")
    return (f"pin {f['pin']}; gateway {'default workers' if f['gw'] == 'default' else '--workers ' + f['gw']}; "
            f"nginx worker_processes {f['ngx']}, upstream {f['upstream']}"
            f"{' (keepalive ' + f['ka'] + ')' if f['upstream'] == 'tuned' else ''}; backends {f['backends']}; "
            f"wrk -t{t} -c{c}")


def _pins(f):
    if f["pin"] == "split" and (os.cpu_count() or 1) >= 2:
        return "0", "1", None
    return None, None, None


def run(env, backends, setups):
    """Runs every setup in turn; returns [{label, factors, gw_workers, rounds}] (rounds as
    phases.measure returns them, named "gateway" and "nginx")."""
    out = []
    topology = "per-instance"
    shared = None  # the one-process backend while it runs
    quiet_deadline = time.monotonic() + env.opts.wait_quiet  # one budget for the whole phase
    try:
        for i, (label, f) in enumerate(setups):
            phases.log(f"setup {label}: {describe(f)}")
            e = copy.copy(env)
            e.proxy_cpus, e.wrk_cpus, e.backend_cpus = _pins(f)
            if f["backends"] != topology:
                if shared is not None:
                    env.procs.stop(shared)
                    shared = None
                else:
                    backends.stop_all()
                if f["backends"] == "per-instance":
                    backends.start_all()
                else:
                    shared = start_multi_backend(env.procs, env.run_dir, f"backends-{f['backends']}-{i + 1}",
                                                 backends.ports, cpus=e.backend_cpus,
                                                 workers="auto" if f["backends"] == "one-auto" else None)
                topology = f["backends"]
            backend_procs = [shared] if shared is not None else list(backends.by_port.values())
            out.append(_one(e, i + 1, label, f, backend_procs, backends.ports, quiet_deadline))
    finally:
        if shared is not None:
            env.procs.stop(shared)
        backends.start_all()
    return out


def _one(env, idx, label, f, backend_procs, ports, quiet_deadline):
    o = env.opts
    threads, conns = (int(x) for x in f["wrk"].split("x"))
    ref = start_reference(env.procs, env.run_dir, ports, cpus=env.proxy_cpus, workers=f["ngx"],
                          upstream=f["upstream"], name=f"nginx-s{idx}", keepalive=int(f["ka"]))
    gw_args = [] if f["gw"] == "default" else ["--workers", f["gw"]]
    gw, ready_s = start_gateway(env.procs, env.bin_dir, f"gateway-s{idx}", env.consul, [phases.SERVICE], gw_args,
                                cpus=env.proxy_cpus)
    try:
        if ready_s is None:
            raise HarnessError(f"gateway of setup {label} not ready within 30 s; see {gw.log_path}")
        gw_workers = f["gw"] if f["gw"] != "default" else f"default = {len(os.sched_getaffinity(gw.pid))}"
        order = [("gateway", gw), ("nginx", ref)]
        for name, proc in order:
            url = f"http://127.0.0.1:{proc.port}/{phases.SERVICE}/"
            if http_status(url) != 200:
                raise HarnessError(f"{name} of setup {label} does not route: GET {url} -> {http_status(url)}")
        rounds = []
        for r in range(o.rounds):
            if o.wait_quiet:
                wait_quiet(max(0.0, quiet_deadline - time.monotonic()), log=phases.log)
            for name, proc in (order if r % 2 == 0 else order[::-1]):
                rounds.append(phases.measure(env, name, proc, backend_procs, r + 1, connections=conns,
                                             threads=threads))
        profiles = {}
        if o.perf:  # after the measured rounds, as in the pinned comparison
            for name, proc in order:
                profiles[name] = phases.profile(env, f"s{idx}-{name}", proc, connections=conns, threads=threads)
    finally:
        env.procs.stop(gw)
        env.procs.stop(ref)
    return {"idx": idx, "label": label, "factors": f, "gw_workers": gw_workers, "rounds": rounds,
            "profiles": profiles}


def summarize(results):
    """Per setup: medians of each proxy's figures and the within-round ratios gateway / nginx."""
    rows = []
    for s in results:
        by = {}
        for r in s["rounds"]:
            by.setdefault(r["name"], {})[r["round"]] = r
        g, n = by.get("gateway", {}), by.get("nginx", {})
        common = sorted(set(g) & set(n))
        med = lambda d, k: statistics.median(d[x][k] for x in d)  # noqa: E731
        ratio = lambda k: statistics.median(g[x][k] / n[x][k] for x in common) if common else float("nan")  # noqa: E731
        rows.append({
            "idx": s["idx"], "label": s["label"], "factors": s["factors"], "gw_workers": s["gw_workers"],
            "rounds": len(common),
            "gw_rps": med(g, "rps"), "ngx_rps": med(n, "rps"), "rps_ratio": ratio("rps"),
            "gw_cpu": med(g, "sched_us_per_req"), "gw_cpu_nw": med(g, "sched_us_per_req_nowatcher"),
            "ngx_cpu": med(n, "sched_us_per_req"), "cpu_ratio": ratio("sched_us_per_req"),
            "cpu_ratio_nw": statistics.median(g[x]["sched_us_per_req_nowatcher"] / n[x]["sched_us_per_req"]
                                              for x in common) if common else float("nan"),
            "cpu_ratio_ticks": ratio("cpu_us_per_req"),
            "p99_ratio": ratio("p99"),
            "gw_util": med_util(g, "proxy"), "ngx_util": med_util(n, "proxy"),
            "backends_util": statistics.median([r["util"]["backends"] for d in (g, n) for r in d.values()]),
            "other": max(r["util"]["other"] for d in (g, n) for r in d.values()),
            "errors": sum(r["errors"] for d in (g, n) for r in d.values()),
            "gw_top": med_top(g), "ngx_top": med_top(n), "profiles": s.get("profiles") or {},
            "rps_ratios": [g[x]["rps"] / n[x]["rps"] for x in common],
            "cpu_ratios": [g[x]["sched_us_per_req"] / n[x]["sched_us_per_req"] for x in common],
        })
    return rows


def med_util(d, k):
    return statistics.median(r["util"][k] for r in d.values())


def med_top(d):
    """Median share of the proxy's CPU taken by its busiest thread or process."""
    return statistics.median(r["task_shares"][0][1] if r.get("task_shares") else float("nan") for r in d.values())
