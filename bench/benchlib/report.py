"""Turns the phases' data into the Markdown report (RESULTS.md) and the targets check."""

import statistics


def _ms(us):
    return f"{us / 1000:.2f}"


def _mb(kb):
    return f"{kb / 1024:.1f}"


def _ratio(v, ref):
    return f" ({v / ref:.2f}×)" if ref else ""


def _msd(s):
    return "timeout" if s is None else f"{s * 1e3:.1f}"


def _msu(s):
    return "timeout" if s is None else f"{s * 1e3:.1f} ms"


def throughput_table(summary):
    ref = summary["nginx"]
    lines = [
        "| proxy | req/s | p50 ms | p99 ms | p99.9 ms | errors | CPU µs/req | RSS under load MB | peak RSS (HWM) MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        r = name != "nginx"
        lines.append(
            f"| {name} | {s['rps']:.0f}{_ratio(s['rps'], ref['rps']) if r else ''}"
            f" | {_ms(s['p50'])}{_ratio(s['p50'], ref['p50']) if r else ''}"
            f" | {_ms(s['p99'])}{_ratio(s['p99'], ref['p99']) if r else ''}"
            f" | {_ms(s['p999'])}{_ratio(s['p999'], ref['p999']) if r else ''}"
            f" | {s['errors']:.0f} of {s['requests']:.0f}"
            f" | {s['cpu_us_per_req']:.1f}{_ratio(s['cpu_us_per_req'], ref['cpu_us_per_req']) if r else ''}"
            f" | {_mb(s['rss_load_kb'])}{_ratio(s['rss_load_kb'], ref['rss_load_kb']) if r else ''}"
            f" | {_mb(s['hwm_kb'])}{_ratio(s['hwm_kb'], ref['hwm_kb']) if r else ''} |"
        )
    return "\n".join(lines)


NOISY = 0.2  # cores of "everything else" above which a run counts as disturbed


def noisy_note(rounds):
    n = sum(1 for r in rounds if r["util"]["other"] > NOISY)
    if not n:
        return f"No run had more than {NOISY} of a core of other load."
    return (f"**{n} of {len(rounds)} runs (marked ⚠) had more than {NOISY} of a core of other load** (the machine was "
            "shared): their absolute figures are low, and ratios are best read within a round.")


def round_ratios(rounds):
    """Median over rounds of each gateway's ratio to the nginx run of the same round: less sensitive
    to load that changed between rounds than the ratio of the medians."""
    ref = {r["round"]: r for r in rounds if r["name"] == "nginx"}
    out = []
    for name in dict.fromkeys(r["name"] for r in rounds if r["name"] != "nginx"):
        rs = [r for r in rounds if r["name"] == name and r["round"] in ref]
        if not rs:
            continue
        med = lambda k: statistics.median(r[k] / ref[r["round"]][k] for r in rs)  # noqa: E731
        out.append(f"- {name}: req/s {med('rps'):.2f}×, CPU µs/req {med('cpu_us_per_req'):.2f}×, "
                   f"p50 {med('p50'):.2f}×, p99 {med('p99'):.2f}×, p99.9 {med('p999'):.2f}×")
    text = "Within-round ratios to nginx (median over rounds):\n\n" + "\n".join(out)
    base = baseline_ratios(rounds)
    return text + ("\n\n" + base if base else "")


def baseline_ratios(rounds):
    """With --baseline-bin-dir: each gateway's CPU µs/req and req/s against the baseline build with the
    same workers, in the same round (their median, and every round's ratio)."""
    by = {(r["name"], r["round"]): r for r in rounds}
    out = []
    for name in dict.fromkeys(r["name"] for r in rounds if r["name"].startswith("gateway ")):
        base = "baseline " + name[len("gateway "):]
        pairs = [(r, by[(base, r["round"])]) for r in rounds if r["name"] == name and (base, r["round"]) in by]
        if not pairs:
            continue
        cpu = [a["cpu_us_per_req"] / b["cpu_us_per_req"] for a, b in pairs]
        rps = [a["rps"] / b["rps"] for a, b in pairs]
        out.append(f"- {name} / {base}: CPU µs/req {statistics.median(cpu):.3f}× (rounds: "
                   f"{', '.join(f'{x:.3f}' for x in cpu)}), req/s {statistics.median(rps):.3f}× (rounds: "
                   f"{', '.join(f'{x:.3f}' for x in rps)})")
    return ("This build against the baseline build, within rounds (median, then each round):\n\n" + "\n".join(out)
            if out else "")


def rounds_table(rounds):
    lines = ["| round | proxy | req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors (status/socket) | CPU s | CPU µs/req | CPU µs/req (schedstat) "
             "| CPU used by proxy / wrk / backends / everything else (1.00 = one core) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        noisy = " ⚠" if r["util"]["other"] > NOISY else ""
        lines.append(f"| {r['round']}{noisy} | {r['name']} | {r['rps']:.0f} | {_ms(r['p50'])} | {_ms(r['p99'])} | {_ms(r['p999'])}"
                     f" | {_ms(r['max'])} | {r['status']:.0f}/{r['socket_errors']:.0f} | {r['cpu_s']:.2f}"
                     f" | {r['cpu_us_per_req']:.1f} | {r['sched_us_per_req']:.1f} | {r['util']['proxy']:.2f} / {r['util']['wrk']:.2f} / "
                     f"{r['util']['backends']:.2f} / {r['util']['other']:.2f} |")
    return "\n".join(lines)


def memory_table(summary):
    lines = ["| proxy | process | idle RSS MB | max RSS under load MB | peak RSS (VmHWM) MB |", "|---|---|---|---|---|"]
    for name, s in summary.items():
        for proc in sorted(set(s["idle_per"]) | set(s["hwm_per"])):
            lines.append(f"| {name} | {proc} | {_mb(s['idle_per'].get(proc, 0))} | {_mb(s['rss_load_per'].get(proc, 0))}"
                         f" | {_mb(s['hwm_per'].get(proc, 0))} |")
    return "\n".join(lines)


def _stats(values):
    ok = [v for v in values if v is not None]
    if not ok:
        return "no measurement completed"
    timeouts = len(values) - len(ok)
    return (f"median {statistics.median(ok) * 1e3:.1f} ms, max {max(ok) * 1e3:.1f} ms, min {min(ok) * 1e3:.1f} ms"
            + (f", **{timeouts} of {len(values)} timed out**" if timeouts else f" ({len(values)} reps)"))


def propagation_section(p):
    if "skipped" in p:
        return f"Skipped: {p['skipped']}."
    logs = [v for v in p["dereg_log"] if v is not None]
    rlogs = [v for v in p["reg_log"] if v is not None]
    return "\n".join([
        f"- Deregistration → no more requests routed to the instance: {_stats(p['dereg'])}",
        f"- Registration → first response from the new instance: {_stats(p['reg'])}",
        f"- Gateway log line after the deregistration call returned: "
        + (f"median {statistics.median(logs) * 1e3:.1f} ms, max {max(logs) * 1e3:.1f} ms" if logs else "not seen")
        + f"; after the registration call: "
        + (f"median {statistics.median(rlogs) * 1e3:.1f} ms, max {max(rlogs) * 1e3:.1f} ms" if rlogs else "not seen"),
        f"- Consul agent call duration (not included above): median {statistics.median(p['call_ms']):.1f} ms, "
        f"max {max(p['call_ms']):.1f} ms. Measured from the call's start instead: deregistration {_stats(p['dereg_call'])}; "
        f"registration {_stats(p['reg_call'])}",
        f"- Client errors during the propagation runs: {p['prober_errors']}; the prober ({p['prober_threads']} keep-alive "
        f"threads) got {p['rate']:.0f} responses/s, i.e. one every {1e3 / p['rate']:.2f} ms (the time resolution)",
        f"- All deregistration samples (ms): {', '.join(_msd(v) for v in p['dereg'])}",
        f"- All registration samples (ms): {', '.join(_msd(v) for v in p['reg'])}",
    ])


def failover_section(f):
    lines = [f"SIGKILL of backend :{f['victim']} (still registered, no health check) at 25% of a {f['duration']} s wrk run.",
             "", "| proxy | requests | client-visible errors | HTTP ≥400 | socket errors (connect/read/write/timeout) | p99 ms | max ms |",
             "|---|---|---|---|---|---|---|"]
    for r in f["results"]:
        d = r["detail"]
        lines.append(f"| {r['name']} | {r['requests']:.0f} | {r['errors']:.0f} | {r['status']:.0f} | {r['socket']:.0f} "
                     f"({d['connect']:.0f}/{d['read']:.0f}/{d['write']:.0f}/{d['timeout']:.0f}) | {_ms(r['p99'])} | {_ms(r['max'])} |")
    return "\n".join(lines)


def scale_section(s):
    chs = s["changes"]
    done = [c for c in chs if "skipped" not in c]
    skipped = [c for c in chs if "skipped" in c]
    if not chs:
        change = "not measured: no service was loaded with all its instances"
    elif not done:
        change = f"not measured: {chs[0]['skipped']}"
    else:
        change = (_stats([c["dereg"] for c in done]) + "; per change: "
                  + "; ".join(f"{c['service']} {_msu(c['dereg'])} (log line {_msu(c['log'])})" for c in done)
                  + f"; client errors {sum(c['prober_errors'] for c in done)}")
    if done and skipped:
        change += "; not measured: " + "; ".join(c["skipped"] for c in skipped)
    ready = f"{s['ready_s']:.2f} s" if s["ready_s"] is not None else f"**never within {s['timeout']} s**"
    kind = "each with a passing check of its own" if s["checks"] else "without any check"
    return "\n".join([
        f"- {s['services']} services × {s['instances']} instances ({kind}) registered through the catalog in "
        f"{s['register_s']:.1f} s",
        f"- Gateway start → /readyz 200: {ready}",
        f"- Services loaded (≥1 instance in /services): {s['loaded']} of {s['services']}; with all {s['instances']}: "
        f"{s['full']}; marked stale: {s['stale']}",
        f"- TCP connections to Consul held by the gateway's process tree: now {_fmt(s['conns_now'])}; "
        f"max seen while loading {_fmt(s['conns_max'])}",
        f"- One change (deregister one instance of one service) → not routed any more: {change}",
        f"- RSS: {_fmt_mb(s['rss'])}; peak (VmHWM): {_fmt_mb(s['hwm'])}",
    ])


def _sec(v):
    return "never" if v is None else f"{v:.2f} s"


def tagged_section(s):
    """The tagged scale variant: routes from tags at scale, new services, changes and their cost."""
    n, k = s["services"], s["instances"]
    st = s["stall"]
    workers = f"--workers {s['workers']}" if s.get("workers") else "default --workers"
    new = [x for x in s["new"] if "skipped" not in x]
    chs = [c for c in s["changes"] if "skipped" not in c]
    lines = [
        f"- {n} services × {k} instances, each service tagged `gateway` (route `/svc-tag-<i>`), each instance with a "
        f"passing check of its own; registered through `/v1/txn` in {s['register_s']:.1f} s, before the gateway "
        f"started (with `--services service-web`, {workers})",
        f"- Gateway start → every route live (GET /routes lists all {n} with all {k} instances): "
        + (_sec(s["ready_s"]) if s["ready_s"] is not None else f"**not within {s['timeout']:.0f} s** ({s['live']} of {n})")
        + f"; the last `route added` log line at {_sec(s['logged_s'])}; /readyz 200 at {_sec(s['readyz_s'])}",
        f"- Meanwhile, one request every 5 ms to the static route /service-web/: longest gap between two responses "
        f"{st['max_gap'] * 1e3:.0f} ms, slowest response {st['max_latency'] * 1e3:.0f} ms ({st['responses']} responses, "
        f"{st['errors']} not 200)",
        f"- TCP connections to Consul held by the gateway's process tree: now {_fmt(s['conns_now'])}; "
        f"max seen while loading {_fmt(s['conns_max'])}",
    ]
    if new:
        lines.append(
            f"- A new service (agent registration, tag `gateway`, TTL check critical; its route answers 503) → first "
            f"200 through the gateway after its check is set passing (`PUT /v1/agent/check/pass`), from the call's "
            f"return: {_stats([x['routable'] for x in new])}; from the call's start: "
            f"{_stats([x['routable_call'] for x in new])}; registration → route listed (first 503): "
            f"{_stats([x['listed'] for x in new])}")
    for x in s["new"]:
        if "skipped" in x:
            lines.append(f"- New service {x['service']} not measured: {x['skipped']}")
    if chs:
        lines.append(f"- One change (catalog deregistration of one instance) → not routed any more: "
                     f"{_stats([c['dereg'] for c in chs])}; client errors {sum(c['prober_errors'] for c in chs)}")
    c, w = s.get("cost"), s.get("write_only")
    if c:
        per = c["per_change"]
        lines.append(
            f"- Cost of one change (a check flip: catalog re-registration of one instance with its check critical, "
            f"then passing; {c['changes']} flips, each awaited in the gateway's log, minus each process's CPU at rest): "
            + ", ".join(f"{name} {v['net_ms']:.2f} ms CPU (raw {v['raw_ms']:.2f}; at rest {v['idle_ms_per_s']:.2f} ms/s)"
                        for name, v in per.items())
            + f"; Consul sent {c['sent_per_change'] / 1e3:.0f} kB per change to the gateway's tree (tcp_info "
              f"bytes_sent of its HTTP connections to 127.0.0.1{'; ' + str(c['closed_conns']) + ' closed meanwhile, not counted' if c['closed_conns'] else ''})"
            + (f"; change seen in the gateway's log after median {statistics.median(c['seen_ms']):.1f} ms, "
               f"max {max(c['seen_ms']):.1f} ms" if c["seen_ms"] else "")
            + (f"; **{c['missed']} not seen**" if c["missed"] else ""))
    r = s.get("route_cost")
    if r:
        per = r["per_change"]
        lines.append(
            f"- Cost of one route change (instance 0 of a service re-registered with the tag "
            f"`urlprefix-/alt-<service>` added, then removed: a route added or removed, the table rebuilt; "
            f"{r['changes']} changes, each awaited in the gateway's log): "
            + ", ".join(f"{name} {v['net_ms']:.2f} ms CPU" for name, v in per.items())
            + (f"; seen in the gateway's log after median {statistics.median(r['seen_ms']):.1f} ms, "
               f"max {max(r['seen_ms']):.1f} ms" if r["seen_ms"] else "")
            + (f"; **{r['missed']} not seen**" if r["missed"] else ""))
    if w:
        lines.append(f"- The same flips with no gateway running (Consul's cost of the writes alone): Consul "
                     f"{w['per_change']['consul']['net_ms']:.2f} ms CPU per change")
    lines.append("- Answers the watcher re-reads, as Consul sends them (no gzip): "
                 + ", ".join(f"`{p}` {b / 1e3:.0f} kB" for p, b in s["sizes"].items()))
    lines.append(f"- RSS: {_fmt_mb(s['rss'])}; peak (VmHWM): {_fmt_mb(s['hwm'])}")
    return "\n".join(lines)


def _fmt(d):
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def _fmt_mb(d):
    return ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in d.items()) or "?"


def targets(summary, prop, fo, sc, gw_name):
    """[(target, measured, met)] for the lead's goals, from the measurements as they are."""
    rows = []
    ref = summary.get("nginx")
    g = summary.get(gw_name)
    for name, v in summary.items():
        if name == "nginx" or not ref:
            continue
        # The targets name one worker; other worker counts are reported, not judged.
        judged = name == gw_name
        label = name if judged else f"{name}, for information: the targets name one worker"
        rows.append((f"CPU/request ≤ 1.3× nginx ({label})", f"{v['cpu_us_per_req'] / ref['cpu_us_per_req']:.2f}×",
                     v["cpu_us_per_req"] <= 1.3 * ref["cpu_us_per_req"] if judged else None))
        rows.append((f"throughput ≥ 1.0× nginx ({label})", f"{v['rps'] / ref['rps']:.2f}×",
                     v["rps"] >= ref["rps"] if judged else None))
        rows.append((f"p99 ≤ 1.5× nginx ({label})", f"{v['p99'] / ref['p99']:.2f}×",
                     v["p99"] <= 1.5 * ref["p99"] if judged else None))
    if prop and "skipped" not in prop:
        d = prop["dereg"]
        ok = [v for v in d if v is not None]
        if ok:
            med = statistics.median(ok)
            rows.append(("deregistration median ≤ 20 ms", f"{med * 1e3:.1f} ms", med <= 0.020))
        rows.append(("deregistration max ≤ 100 ms",
                     "timeout" if len(ok) < len(d) else f"{max(ok) * 1e3:.1f} ms", len(ok) == len(d) and max(ok) <= 0.100))
        r = prop["reg"]
        rok = [v for v in r if v is not None]
        rows.append(("registration routable ≤ 100 ms (max)",
                     "timeout" if len(rok) < len(r) else f"{max(rok) * 1e3:.1f} ms", len(rok) == len(r) and max(rok) <= 0.100))
    for f in (fo or {}).get("results", []):
        if f["name"] != "nginx":
            rows.append((f"failover: 0 client-visible errors ({f['name']})", f"{f['errors']:.0f}", f["errors"] == 0))
    if g:
        gw_idle = g["idle_per"].get("gateway", 0)
        gw_load = g["rss_load_per"].get("gateway", 0)
        w = max(g["hwm_per"].get("watcher", 0), g["rss_load_per"].get("watcher", 0))
        rows.append((f"gateway RSS ≤ 20 MB idle ({gw_name})", f"{gw_idle / 1024:.1f} MB", gw_idle <= 20 * 1024))
        rows.append((f"gateway RSS ≤ 40 MB under load ({gw_name})", f"{gw_load / 1024:.1f} MB", gw_load <= 40 * 1024))
        rows.append(("watcher RSS ≤ 10 MB (peak)", f"{w / 1024:.1f} MB" if w else "no watcher process", 0 < w <= 10 * 1024))
    for v in sc or []:
        n = v["services"]
        if v.get("kind") == "tagged":
            rows += _tagged_targets(v)
            continue
        tag = f"scale ({n} services, {'with' if v['checks'] else 'no'} checks)"
        rows.append((f"{tag}: loaded ≤ 3 s",
                     f"{v['ready_s']:.2f} s" if v["ready_s"] is not None else f"never ({v['loaded']}/{n} loaded)",
                     v["ready_s"] is not None and v["ready_s"] <= 3))
        done = [c for c in v["changes"] if "skipped" not in c]
        ds = [c["dereg"] for c in done]
        rows.append((f"{tag}: one change ≤ 250 ms (max of {len(ds)})",
                     "not measured" if not ds else
                     f"timeout ({ds.count(None)} of {len(ds)})" if None in ds else f"{max(ds) * 1e3:.1f} ms",
                     bool(ds) and None not in ds and max(ds) <= 0.250))
        conns = sum(v["conns_max"].values())
        rows.append((f"{tag}: ≤ 16 connections to Consul",
                     f"{conns} max seen while loading, {sum(v['conns_now'].values())} after (whole gateway tree)",
                     conns <= 16))
        w = v["rss"].get("watcher", 0)
        rows.append((f"{tag}: watcher RSS (no target stated; 10 MB is the 1-service target)", f"{w / 1024:.1f} MB", None))
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'–' if ok is None else 'yes' if ok else '**no**'} |" for t, m, ok in rows]
    return "\n".join(lines)


def _tagged_targets(v):
    n = v["services"]
    tag = f"scale ({n} services by tag)"
    rows = [(f"{tag}: every route live ≤ 3 s", _sec(v["ready_s"]) if v["ready_s"] is not None else f"never ({v['live']}/{n})",
             v["ready_s"] is not None and v["ready_s"] <= 3)]
    new = [x["routable"] for x in v["new"] if "skipped" not in x]
    rows.append((f"{tag}: new service routable ≤ 250 ms after its check passes (max of {len(new)})",
                 "not measured" if not new else f"timeout ({new.count(None)} of {len(new)})" if None in new
                 else f"{max(new) * 1e3:.1f} ms", bool(new) and None not in new and max(new) <= 0.250))
    ds = [c["dereg"] for c in v["changes"] if "skipped" not in c]
    rows.append((f"{tag}: one change ≤ 250 ms (max of {len(ds)})",
                 "not measured" if not ds else f"timeout ({ds.count(None)} of {len(ds)})" if None in ds
                 else f"{max(ds) * 1e3:.1f} ms", bool(ds) and None not in ds and max(ds) <= 0.250))
    conns = sum(v["conns_max"].values())
    rows.append((f"{tag}: ≤ 16 connections to Consul", f"{conns} max seen while loading, "
                 f"{sum(v['conns_now'].values())} after (whole gateway tree)", conns <= 16))
    return rows


def setups_section(rows, rounds_by_setup):
    """--setups: one row per setup (medians over rounds; ratios gateway / nginx within rounds), then
    every run."""
    lines = ["| # | setup | factors | gateway workers | gateway req/s | nginx req/s | req/s ratio "
             "| gateway CPU µs/req (without watcher) | nginx CPU µs/req | CPU/req ratio (without watcher) "
             "| p99 ratio | cores used: gateway / nginx / backends | busiest task's share: gateway / nginx "
             "| max other load | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        noisy = " ⚠" if r["other"] > NOISY else ""
        lines.append(
            f"| {r['idx']} | {r['label']} | {_factors(r['factors'])} | {r['gw_workers']} | {r['gw_rps']:.0f} "
            f"| {r['ngx_rps']:.0f} | **{r['rps_ratio']:.2f}×** | {r['gw_cpu']:.1f} ({r['gw_cpu_nw']:.1f}) "
            f"| {r['ngx_cpu']:.1f} | **{r['cpu_ratio']:.2f}×** ({r['cpu_ratio_nw']:.2f}×) | {r['p99_ratio']:.2f}× "
            f"| {r['gw_util']:.2f} / {r['ngx_util']:.2f} / {r['backends_util']:.2f} "
            f"| {r['gw_top']:.0%} / {r['ngx_top']:.0%} | {r['other']:.2f}{noisy} "
            f"| {r['errors']:.0f} |")
    lines += ["", "Ratios are gateway / nginx within each round, median over rounds (each round's: "
              + "; ".join(f"{r['idx']}: req/s {', '.join(f'{x:.2f}' for x in r['rps_ratios'])}, CPU "
                          f"{', '.join(f'{x:.2f}' for x in r['cpu_ratios'])}" for r in rows) + "). "
              "CPU µs/req from schedstat (exact run time) of the proxy's process tree (gateway + watcher; nginx "
              "master + workers); in parentheses the gateway without its watcher process. Cores used: median "
              "share of one CPU during the runs (tick-sampled). Busiest task's share: how much of the proxy's CPU "
              "its busiest thread (gateway) or process (nginx) took (100%: one worker did everything). Runs with more than "
              f"{NOISY} of a core of other load are marked ⚠."]
    prof = [r for r in rows if any(r["profiles"].values())]
    if prof:
        lines += ["", "Per request under one more wrk run each (perf stat, the proxy's process tree; `--perf`): "
                  + "; ".join(f"{r['idx']}: " + ", ".join(
                      f"{k} {v['syscalls']:.2f} syscalls / {v['switches']:.3f} context switches"
                      for k, v in r["profiles"].items() if v and v["syscalls"] is not None) for r in prof) + "."]
    allr = []
    for idx, rs in rounds_by_setup:
        for x in rs:
            allr.append(dict(x, name=f"{idx} {x['name']}"))
    lines += ["", "### Per run", "", rounds_table(allr)]
    return "\n".join(lines)


def _factors(f):
    t, c = f["wrk"].split("x")
    ka = f" (keepalive {f['ka']})" if f["upstream"] == "tuned" else ""
    return (f"pin {f['pin']}, gw {f['gw']}, ngx {f['ngx']}, upstream {f['upstream']}{ka}, backends {f['backends']}, "
            f"wrk -t{t} -c{c}")
