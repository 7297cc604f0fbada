"""The churn soak's Markdown report and its one machine-readable line (bench/soak.py)."""

import math
import shlex

from .report import _mb


def pct(values, p):
    """Nearest-rank percentile of a non-empty list."""
    v = sorted(values)
    return v[max(0, min(len(v) - 1, math.ceil(p / 100 * len(v)) - 1))]


def _prop(ops, kind):
    done = [op for op in ops if op.kind == kind and op.status == 200]
    seen = [op.propagation() for op in done if op.t_seen is not None]
    return {"n": len(done), "unseen": len(done) - len(seen), "early": sum(1 for s in seen if s < 0),
            "ms": [max(0.0, s) * 1e3 for s in seen]}


def _series(samples, key, t_start, t_end):
    """(start, end, min, max) of a sampled value over the soak proper (after the warm-up)."""
    vs = [(s["t"], s[key]) for s in samples if s[key] is not None]
    soak = [v for t, v in vs if t_start <= t <= t_end] or [v for _, v in vs]
    if not soak:
        return None
    return soak[0], soak[-1], min(soak), max(soak)


def summary(res):
    """Every figure the report and the SOAK_RESULT line give."""
    s, t0, t1 = res["samples"], res["t_start"], res["t_end"]
    out = {"probe": res["probe"], "wrk": res["wrk"], "reg": _prop(res["ops"], "register"),
           "dereg": _prop(res["ops"], "deregister")}
    for key in ("gw_rss", "w_rss", "gw_fds", "w_fds", "gw_other", "w_other", "gw_upstream", "gw_downstream", "conns",
                "gw_conns", "w_conns"):
        out[key] = _series(s, key, t0, t1)
    out["conns_max_all"] = max((x["conns"] for x in s), default=0)
    out["watcher_pids"] = sorted({p for x in s for p in x["watcher_pids"]})
    return out


def _growth(series):
    if not series or not series[0]:
        return None
    return 100.0 * (series[1] - series[0]) / series[0]


def _pcts(p):
    if not p["ms"]:
        return "none seen"
    return (f"p50 {pct(p['ms'], 50):.1f} ms, p90 {pct(p['ms'], 90):.1f} ms, p99 {pct(p['ms'], 99):.1f} ms, "
            f"max {max(p['ms']):.1f} ms ({len(p['ms'])} changes"
            + (f"; {p['early']} seen before the call returned, counted as 0" if p["early"] else "")
            + (f"; **{p['unseen']} never seen**" if p["unseen"] else "") + ")")


def _mem_row(name, ser):
    if not ser:
        return f"| {name} | – | – | – | – | – |"
    g = _growth(ser)
    return (f"| {name} | {_mb(ser[0])} | {_mb(ser[1])} | {'–' if g is None else f'{g:+.1f}%'} | {_mb(ser[2])} | "
            f"{_mb(ser[3])} |")


def _fd_row(name, ser):
    if not ser:
        return f"| {name} | – | – | – | – |"
    return f"| {name} | {ser[0]} | {ser[1]} | {ser[2]} | {ser[3]} |"


def render(o, info, res):
    m, sm = info["machine"], summary(res)
    f, pr, w = res["fleet"], sm["probe"], sm["wrk"]
    soak_s = res["t_end"] - res["t_start"]
    ops = res["ops"]
    cmd = "bash bench/soak.sh" + ("" if not info["argv"] else " " + " ".join(shlex.quote(a) for a in info["argv"]))
    judged_err = sum(pr["errors"].values())
    gw_g, w_g = _growth(sm["gw_rss"]), _growth(sm["w_rss"])
    missing, extra = res["converged"]
    wrk_non2xx = w["status"]
    out = [
        "# Churn soak", "",
        f"- Date: {info['date']}; command: `{cmd}`; repository at `{info['git']}`; binaries from `{info['bin_dir']}`",
        f"- Machine: {m['nproc']} CPUs, {m['cpu']}, {m['mem_gib']:.0f} GiB, kernel {m['kernel']}, {m['os']}; load "
        f"average before / after: {info['load_before']} / {info['load_after']}; all CPUs {res['busy']:.0f}% busy "
        f"during the run (everything on the machine)",
        f"- Tools: {info['wrk']}, {info.get('consul', '?')} (one server agent), Python {info['python']}",
        f"- Setup: {o.services} services `soak-<i>` × {o.slots} instance slots (one nginx process listening on every "
        f"slot's port), {o.initial} registered each at start through the agent API with a TTL check that starts "
        f"passing and outlives the run; the last {o.volatile} services may lose every instance, the others always "
        f"keep one; gateway `--services soak-0,...` ({'--workers ' + str(o.workers) if o.workers else 'default workers'}"
        f"{''.join(' ' + a for a in o.gateway_arg)})",
        f"- Churn: {o.rate:g} operations/s target over {o.churn_threads} threads (each a keep-alive connection from "
        f"127.0.0.2), each flipping a random instance that has no change in flight; {len(ops)} operations in "
        f"{o.warmup:.0f} s warm-up + {soak_s:.0f} s soak = {len(ops) / (res['t_end'] - res['t0']):.1f}/s "
        f"({sum(op.kind == 'register' for op in ops)} registrations, {sum(op.kind == 'deregister' for op in ops)} "
        f"deregistrations)",
        f"- Traffic: wrk -t1 -c{o.connections} over {res['wrk_paths']} service paths "
        f"({'the stable services' if o.wrk_services == 'stable' else 'all services'}) for the whole run: "
        f"{w['rps']:.0f} req/s; the probe: {o.probe_threads} keep-alive clients, {o.probe_rate:g} req/s over all "
        f"{o.services} services",
        f"- CPU used (1.00 = one core, over the run): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(res["cpu"].items())), "",
        "## Results", "",
        "| goal | measured | met |", "|---|---|---|",
        f"| 0 errors on requests to services with a healthy instance (probe) | {judged_err} of {pr['judged']} | "
        f"{'yes' if judged_err == 0 else '**no**'} |",
        f"| wrk: 0 non-2xx, 0 socket errors ({'stable services only' if o.wrk_services == 'stable' else 'all services, 503s expected'}) "
        f"| {wrk_non2xx:.0f} non-2xx, {w['socket_errors']:.0f} socket errors of {w['requests']:.0f} | "
        f"{'yes' if w['errors'] == 0 else '**no**' if o.wrk_services == 'stable' else '–'} |",
        f"| gateway RSS growth ≤ 10% (start → end of soak) | {'–' if gw_g is None else f'{gw_g:+.1f}%'} | "
        f"{'–' if gw_g is None else 'yes' if gw_g <= 10 else '**no**'} |",
        f"| watcher RSS growth ≤ 10% | {'–' if w_g is None else f'{w_g:+.1f}%'} | "
        f"{'–' if w_g is None else 'yes' if w_g <= 10 else '**no**'} |",
        f"| open fds flat: the gateway's and the watcher's fds that are not connections to clients, instances or "
        f"Consul (start → end) | {_fd_flat(sm['gw_other'])}; {_fd_flat(sm['w_other'])} (all fds: "
        f"{_fd_flat(sm['gw_fds'])}; {_fd_flat(sm['w_fds'])}) | "
        f"{'yes' if _flat(sm['gw_other']) and _flat(sm['w_other']) else '**no**'} |",
        f"| ≤ 16 connections to Consul (max sampled, gateway + watcher) | {sm['conns_max_all']} | "
        f"{'yes' if sm['conns_max_all'] <= 16 else '**no**'} |",
        f"| every change reaches the gateway | {sm['reg']['unseen'] + sm['dereg']['unseen']} not seen | "
        f"{'yes' if sm['reg']['unseen'] + sm['dereg']['unseen'] == 0 else '**no**'} |",
        f"| the end state matches Consul (/services) | {missing} missing, {extra} extra instances | "
        f"{'yes' if (missing, extra) == (0, 0) else '**no**'} |", "",
        "### Propagation (call returned → the gateway's change event on `GET /events`)", "",
        f"- Registration: {_pcts(sm['reg'])}",
        f"- Deregistration: {_pcts(sm['dereg'])}", "",
        "### Requests", "",
        f"- Probe: {pr['total']} requests; {pr['judged']} to a service with a healthy instance from sending to answer "
        f"(judged), {judged_err} of them not a 200 from an instance of that service"
        + (f" ({', '.join(f'{k}: {v}' for k, v in pr['errors'].items())})" if pr["errors"] else "")
        + f"; {pr['stale']} answered by an instance the gateway had already shown as removed; "
        f"{pr['unjudged']} not judged (service without an instance, or within a change of its last one), answered: "
        + (", ".join(f"{k}: {v}" for k, v in sorted(pr["unjudged_status"].items(), key=str)) or "–"),
        f"- wrk: {w['requests']:.0f} requests, {w['status']:.0f} with status ≥ 400, socket errors "
        f"{w['connect']:.0f} connect / {w['read']:.0f} read / {w['write']:.0f} write / {w['timeout']:.0f} timeout; "
        f"p50 {w['p50'] / 1e3:.2f} ms, p99 {w['p99'] / 1e3:.2f} ms, max {w['max'] / 1e3:.1f} ms. wrk cannot tell which "
        "service a response was for" + (": it spreads over the services that always keep an instance, so each of its "
                                        "errors is one" if o.wrk_services == "stable" else
                                        ", and the volatile services answer 503 while they have no instance"),
    ]
    out += _examples(pr, res["t0"])
    out += ["", "### Memory, file descriptors, connections (sampled every "
            f"{o.sample_interval:g} s; start = first sample after the warm-up)", "",
            "| process | RSS start MB | RSS end MB | growth | min MB | max MB |", "|---|---|---|---|---|---|",
            _mem_row("gateway", sm["gw_rss"]), _mem_row("watcher", sm["w_rss"]), "",
            "| open fds | start | end | min | max |", "|---|---|---|---|---|",
            _fd_row("gateway, all", sm["gw_fds"]), _fd_row("gateway, connections to instances", sm["gw_upstream"]),
            _fd_row("gateway, connections from clients", sm["gw_downstream"]),
            _fd_row("gateway, connections to Consul", sm["gw_conns"]),
            _fd_row("gateway, everything else (listeners, epoll, eventfd, pipes, files)", sm["gw_other"]),
            _fd_row("watcher, all", sm["w_fds"]), _fd_row("watcher, connections to Consul", sm["w_conns"]),
            _fd_row("watcher, everything else", sm["w_other"]), "",
            "Connections to instances come and go with the gateway's per-worker pools (idle ones are closed after "
            "`--upstream-idle-timeout`), so their count moves with the load; what must stay flat is the rest.", "",
            f"Watcher processes seen: {len(sm['watcher_pids'])} (a restart would show 2 or more). Change feed: "
            f"{res['feed'].changes} change events, {len(f.unexpected)} instance changes the harness did not make"
            + (f", other events: {'; '.join(m for _, _, m in res['feed'].others[:5])}" if res["feed"].others else "")
            + (f"; the feed broke: {res['feed'].error}" if res["feed"].error else "")
            + f". Gateway alive at the end: {'yes' if res['gw_alive'] else '**no**'}; its log: `{res['gw_log']}`.",
            "", _series_table(res), ""]
    return "\n".join(out)


def _flat(ser):
    return ser is not None and ser[1] <= ser[0]


def _fd_flat(ser):
    return "–" if not ser else f"{ser[0]} → {ser[1]} (max {ser[3]})"


def _examples(pr, t0):
    lines = []
    if pr["error_examples"]:
        lines.append("- First errors (service, sent s after start, took ms, answer, port): "
                     + "; ".join(f"{s} {ts - t0:.2f} {(te - ts) * 1e3:.0f} {st} {p}"
                                 for s, ts, te, st, p in pr["error_examples"]))
    if pr["stale_examples"]:
        lines.append("- First stale answers (service, sent s after start, port): "
                     + "; ".join(f"{s} {ts - t0:.2f} {p}" for s, ts, te, p in pr["stale_examples"]))
    return lines


def _series_table(res, rows=16):
    s = res["samples"]
    step = max(1, len(s) // rows)
    pick = s[::step] + ([s[-1]] if (len(s) - 1) % step else [])
    lines = ["| s | gateway RSS MB | watcher RSS MB | gateway fds (to instances / else) | watcher fds | to Consul |",
             "|---|---|---|---|---|---|"]
    for x in pick:
        lines.append(f"| {x['t'] - res['t0']:.0f} | {_mb(x['gw_rss'])} | {_mb(x['w_rss'] or 0)} | {x['gw_fds']} "
                     f"({x['gw_upstream']} / {x['gw_other']}) | {x['w_fds']} | {x['conns']} |")
    return "\n".join(lines)


def result_line(res):
    """SOAK_RESULT key=value ... (sizes in kB, times in ms; -1 when not measured)."""
    sm = summary(res)
    pr, w = sm["probe"], sm["wrk"]

    def ser(key, i):
        return sm[key][i] if sm[key] else -1

    kv = {"ops": len(res["ops"]), "soak_s": round(res["t_end"] - res["t_start"]),
          "probe_requests": pr["total"], "probe_judged": pr["judged"], "probe_errors": sum(pr["errors"].values()),
          "probe_stale": pr["stale"], "wrk_requests": int(w["requests"]), "wrk_non2xx": int(w["status"]),
          "wrk_socket_errors": int(w["socket_errors"]),
          "gw_rss_start_kb": ser("gw_rss", 0), "gw_rss_end_kb": ser("gw_rss", 1), "gw_rss_max_kb": ser("gw_rss", 3),
          "w_rss_start_kb": ser("w_rss", 0), "w_rss_end_kb": ser("w_rss", 1), "w_rss_max_kb": ser("w_rss", 3),
          "gw_fds_start": ser("gw_fds", 0), "gw_fds_end": ser("gw_fds", 1), "gw_fds_max": ser("gw_fds", 3),
          "w_fds_start": ser("w_fds", 0), "w_fds_end": ser("w_fds", 1), "w_fds_max": ser("w_fds", 3),
          "gw_other_fds_start": ser("gw_other", 0), "gw_other_fds_end": ser("gw_other", 1),
          "w_other_fds_start": ser("w_other", 0), "w_other_fds_end": ser("w_other", 1),
          "consul_conns_max": sm["conns_max_all"], "unseen_changes": sm["reg"]["unseen"] + sm["dereg"]["unseen"],
          "converged": int(res["converged"] == (0, 0))}
    for name in ("reg", "dereg"):
        ms = sm[name]["ms"]
        for p in (50, 90, 99):
            kv[f"{name}_p{p}_ms"] = round(pct(ms, p), 1) if ms else -1
        kv[f"{name}_max_ms"] = round(max(ms), 1) if ms else -1
    return "SOAK_RESULT " + " ".join(f"{k}={v}" for k, v in kv.items())
