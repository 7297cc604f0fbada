#!/usr/bin/env python3
"""What one change costs the watcher and Consul, by watch mode, at scale (issue 10's h2 branch).

    bash bench/change_cost.sh [--sizes 2500,5000] [--changes 20] [--modes none,multiplexed,streams]

One Consul 1.8.7 server (as bench/README.md's setup, plus an HTTPS listener with a CA and a server
certificate made by `consul tls ca create` / `consul tls cert create -server` in the run
directory). N services x 3 instances, each instance with a passing check of its own and the tag
`gateway`, on 10 synthetic catalog nodes. The watcher follows them by tag (`--route-tag gateway`),
alone, one mode at a time, printing NDJSON to the harness:

- `none`: no watcher at all; what the change itself costs Consul (the Raft write), to subtract;
- `multiplexed`: plain HTTP (HTTP/1.1), `--mode multiplexed`;
- `streams`: HTTPS (HTTP/2), `--mode streams` (`--max-connections`, default 16);
- `streams-wide`: the same with `--max-connections` = ceil((N + 1) / 240), when that is above 16.

Per mode: time until every service is loaded (a snapshot with all 3 instances), then an idle
window (`--idle` s) for the background rates, then `--changes` changes, one at a time: the check
of one instance of one service goes critical (a catalog registration of the service with its
check, as an agent's anti-entropy sends it), and the next change brings it back, each on
another service, spread over the name range. For each change:

- propagation: from the registration call's return (and start) to the watcher's snapshot line
  for that service with the new instance count (timeout `--timeout` s);
- watcher CPU and Consul CPU in a window of `--window` s from the call's start
  (`/proc/<pid>/task/*/schedstat`, exact run time), minus the idle rate times the window;
- bytes Consul sent to the watcher (and the watcher to Consul) in that window, from the kernel's
  per-socket `bytes_received` / `bytes_acked` (`ss -ti`; TLS and HTTP framing included) of the
  watcher's connections to Consul; the harness talks to Consul from 127.0.0.2, so its own
  connections are not counted;
- connections: the watcher's established TCP connections to Consul (max seen).

Everything listens on 127.0.0.1; the run is bounded (registration, per-change timeouts); every
process is stopped on exit. Python 3 standard library only.
"""

import argparse
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib.procs import HarnessError, Procs, free_port, tree_sched_ns, sched_seconds_between, wait_until  # noqa: E402
from benchlib.procs import consul_connections, machine_busy_percent  # noqa: E402
from benchlib.services import Consul  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
INSTANCES = 3
NODES = 10
STREAMS_PER_CONNECTION = 240


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class TlsConsul(Consul):
    """benchlib's Consul server, plus an HTTPS listener with a CA made for the run."""

    def __init__(self, procs, binary, run_dir):  # noqa: super().__init__ is replaced, not extended
        self.procs, self.binary, self.mode = procs, binary, "server"
        tls = os.path.join(run_dir, "tls")
        os.makedirs(tls, exist_ok=True)
        for args in (["tls", "ca", "create"], ["tls", "cert", "create", "-server"]):
            subprocess.run([binary, *args], cwd=tls, check=True, capture_output=True, timeout=60)
        self.ca = os.path.join(tls, "consul-agent-ca.pem")
        self.port, self.https_port = free_port(), free_port()
        p2, p3, p4 = free_port(), free_port(), free_port()
        data = os.path.join(run_dir, "consul-data")
        os.makedirs(data, exist_ok=True)
        conf = os.path.join(run_dir, "consul.hcl")
        with open(conf, "w") as f:
            f.write(f"""ports {{ http = {self.port}, https = {self.https_port}, dns = -1, grpc = -1,
        serf_lan = {p2}, serf_wan = {p3}, server = {p4} }}
ca_file = "{self.ca}"
cert_file = "{os.path.join(tls, 'dc1-server-consul-0.pem')}"
key_file = "{os.path.join(tls, 'dc1-server-consul-0-key.pem')}"
verify_incoming = false
disable_update_check = true
disable_anonymous_signature = true
performance {{ raft_multiplier = 1 }}
""")
        argv = [binary, "agent", "-server", "-bootstrap-expect=1", "-bind", "127.0.0.1", "-client", "127.0.0.1",
                "-data-dir", data, "-node", "bench-consul", "-config-file", conf]
        self.proc = procs.start("consul", argv)
        self.addr = f"http://127.0.0.1:{self.port}"
        self.https_addr = f"https://127.0.0.1:{self.https_port}"

        def ready():
            if not self.proc.alive():
                raise HarnessError(f"consul exited; see {self.proc.log_path}")
            try:
                status, body = self.request("GET", "/v1/status/leader")
                return status == 200 and body.strip() not in (b"", b'""')
            except OSError:
                return False

        if not wait_until(ready, 30, 0.1):
            raise HarnessError(f"consul did not elect itself leader within 30 s; see {self.proc.log_path}")


def registration(i, j, status="passing"):
    name = f"svc-{i:05d}"
    sid = f"{name}-{j}"
    node = f"node-{(i * INSTANCES + j) % NODES}"
    return {"Node": node, "Address": "127.0.0.1",
            "Service": {"ID": sid, "Service": name, "Address": "127.0.0.1", "Port": 20000 + j, "Tags": ["gateway"]},
            "Check": {"CheckID": f"service:{sid}", "Name": f"{name} alive", "Status": status, "ServiceID": sid}}


def register(consul, start, end):
    """Registers services start..end-1 (3 instances each) over 16 keep-alive connections."""
    jobs = [(i, j) for i in range(start, end) for j in range(INSTANCES)]
    local = threading.local()

    def one(job):
        if not hasattr(local, "conn"):
            local.conn = consul.connection()
        consul.must("PUT", "/v1/catalog/register", registration(*job), local.conn)

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(one, jobs))


# ---- the watcher and what /proc and ss say about it ----

class Watcher:
    def __init__(self, procs, bin_dir, consul, mode, max_connections, n):
        self.mode = mode
        argv = [os.path.join(bin_dir, "watcher"), "--route-tag", "gateway", "--wait", "5m"]
        env = dict(os.environ, NO_COLOR="1", RUST_LOG="info")
        env.pop("CONSUL_HTTP_TOKEN", None)
        if mode == "multiplexed":
            argv += ["--consul", consul.addr, "--mode", "multiplexed"]
        else:
            argv += ["--consul", consul.https_addr, "--mode", "streams", "--max-connections", str(max_connections)]
            env["CONSUL_CACERT"] = consul.ca
        self.argv = argv
        self.latest = {}  # service -> (monotonic time, instances)
        self.lock = threading.Condition()
        self.proc = procs.start(f"watcher-{mode}-{n}", argv, capture=True, env=env)
        self.cursor = 0
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self):
        while self.proc.alive() or self.cursor < len(self.proc.lines):
            lines = self.proc.lines
            if self.cursor >= len(lines):
                time.sleep(0.001)
                continue
            t, line = lines[self.cursor]
            self.cursor += 1
            if not line.startswith("{"):
                continue
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if m.get("type") == "snapshot":
                with self.lock:
                    self.latest[m["service"]] = (t, len(m.get("instances") or []))
                    self.lock.notify_all()

    def wait(self, pred, timeout):
        deadline = time.monotonic() + timeout
        with self.lock:
            while not pred(self.latest):
                left = deadline - time.monotonic()
                if left <= 0 or not self.proc.alive():
                    return False
                self.lock.wait(min(left, 0.05))
        return True


def socket_bytes(ports):
    """{local port: (bytes received, bytes acked)} of established sockets from 127.0.0.1 to Consul's
    ports (the watcher's: the harness uses 127.0.0.2)."""
    out = {}
    try:
        text = subprocess.run(["ss", "-tinH", "state", "established"], capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return out
    lines = text.splitlines()
    for i, line in enumerate(lines):
        f = line.split()
        if len(f) < 4 or not f[2].startswith("127.0.0.1:"):
            continue
        peer_port = int(f[3].rsplit(":", 1)[1])
        if peer_port not in ports:
            continue
        info = lines[i + 1] if i + 1 < len(lines) else ""
        rx = re.search(r"bytes_received:(\d+)", info)
        tx = re.search(r"bytes_acked:(\d+)", info)
        out[int(f[2].rsplit(":", 1)[1])] = (int(rx.group(1)) if rx else 0, int(tx.group(1)) if tx else 0)
    return out


def bytes_between(before, after):
    """(received, sent, connections opened) between two socket_bytes samples: a socket that
    appeared counts from 0; one that went is lost after its last sample."""
    rx = sum(v[0] - before.get(k, (0, 0))[0] for k, v in after.items())
    tx = sum(v[1] - before.get(k, (0, 0))[1] for k, v in after.items())
    return rx, tx, len(set(after) - set(before))


class Meter:
    """CPU (schedstat) of the watcher tree and of Consul, and the watcher's socket bytes."""

    def __init__(self, consul, watcher):
        self.consul, self.watcher = consul, watcher
        self.ports = {consul.port, consul.https_port}

    def sample(self):
        w = tree_sched_ns(self.watcher.proc.pid) if self.watcher else {}
        return time.monotonic(), w, tree_sched_ns(self.consul.proc.pid), socket_bytes(self.ports)

    @staticmethod
    def between(a, b):
        rx, tx, opened = bytes_between(a[3], b[3])
        return {"s": b[0] - a[0], "watcher_cpu": sched_seconds_between(a[1], b[1]),
                "consul_cpu": sched_seconds_between(a[2], b[2]), "rx": rx, "tx": tx, "opened": opened}

    def connections(self):
        if not self.watcher:
            return 0
        return sum(consul_connections(self.watcher.proc.pid, p).get("watcher", 0) for p in self.ports)


# ---- what Consul 1.8's endpoints cost, and which changes wake them ----

def endpoint_costs(consul, n, reps=5):
    """Per endpoint: answer bytes, Consul CPU per request (mean of reps), and whether a blocking query
    on it returns when an *unrelated* service's check changes (svc-00001 watched, svc-00002 changed)."""
    a, b = "svc-00001", "svc-00002"
    filt = "filter=" + urllib.parse.quote(f'ServiceName == "{a}"')
    endpoints = [
        ("/v1/health/state/any", "every check (what the multiplexed mode blocks on)"),
        (f"/v1/health/state/any?{filt}", "every check, filtered to one service server-side"),
        ("/v1/catalog/services", "every service with its tags (the follower's query)"),
        (f"/v1/catalog/node/node-{(1 * INSTANCES) % NODES}", "one node's registrations (node watches / scans)"),
        (f"/v1/health/service/{a}", "one service (the per-service / streams query)"),
        (f"/v1/health/service/{a}?cached", "one service through the agent cache"),
    ]
    conn = consul.connection(timeout=30)
    out = []
    for path, what in endpoints:
        before = tree_sched_ns(consul.proc.pid)
        size, index = 0, 0
        for _ in range(reps):
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            size = len(body)
            index = int(r.getheader("X-Consul-Index") or 0)
        cpu = sched_seconds_between(before, tree_sched_ns(consul.proc.pid)) / reps
        woke = _wakes(consul, path, index, b)
        out.append({"path": path, "what": what, "bytes": size, "consul_cpu": cpu, "wakes_on_unrelated": woke})
        log(f"endpoint @ {n}: {path}: {size / 1000:.1f} kB, {cpu * 1000:.2f} ms Consul CPU, "
            f"wakes on another service's change: {woke}")
    conn.close()
    return out


def _wakes(consul, path, index, other):
    """Whether a blocking query on path at index returns within 2 s of a change to `other`."""
    result = {}

    def poll():
        c = consul.connection(timeout=30)
        sep = "&" if "?" in path else "?"
        t0 = time.monotonic()
        c.request("GET", f"{path}{sep}index={index}&wait=10s")
        r = c.getresponse()
        r.read()
        result["t"] = time.monotonic() - t0
        c.close()

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    time.sleep(0.5)
    if "t" in result:
        return "answered at once"
    i = int(other.rsplit("-", 1)[1])
    consul.must("PUT", "/v1/catalog/register", registration(i, 1, "critical"))
    t.join(2.0)
    woke = "t" in result
    consul.must("PUT", "/v1/catalog/register", registration(i, 1, "passing"))
    t.join(12)
    return "yes" if woke else "no"


# ---- one mode at one size ----

def run_mode(o, procs, consul, n, mode, names):
    wide = math.ceil((n + 1) / STREAMS_PER_CONNECTION)
    max_conn = wide if mode == "streams-wide" else o.max_connections
    watcher = None
    out = {"mode": mode, "services": n, "max_connections": max_conn if mode.startswith("streams") else None}
    if mode != "none":
        t0 = time.monotonic()
        watcher = Watcher(procs, o.bin_dir, consul, mode, max_conn, n)
        out["argv"] = " ".join(shlex.quote(a) for a in watcher.argv[1:])
        loaded = watcher.wait(lambda m: sum(1 for v in m.values() if v[1] == INSTANCES) >= n, o.load_timeout)
        out["load_s"] = (time.monotonic() - t0) if loaded else None
        if not loaded:
            have = sum(1 for v in watcher.latest.values() if v[1] == INSTANCES)
            log(f"{mode} @ {n}: only {have}/{n} services loaded within {o.load_timeout} s; measuring anyway")
        else:
            log(f"{mode} @ {n}: every service loaded in {out['load_s']:.1f} s")
        time.sleep(o.settle)
    meter = Meter(consul, watcher)
    a = meter.sample()
    time.sleep(o.idle)
    idle = Meter.between(a, meter.sample())
    out["idle"] = {k: idle[k] / idle["s"] for k in ("watcher_cpu", "consul_cpu", "rx", "tx")}
    out["connections_max"] = meter.connections()
    conn = consul.connection()
    changes = []
    for k in range(o.changes):
        # Pairs on one service: critical, then passing again; pairs spread over the name range.
        i = ((k // 2) * 7919 + 13) % n
        status = "critical" if k % 2 == 0 else "passing"
        expect = INSTANCES - 1 if status == "critical" else INSTANCES
        name = names[i]
        before = meter.sample()
        t_start = time.monotonic()
        consul.must("PUT", "/v1/catalog/register", registration(i, 0, status), conn)
        t_ret = time.monotonic()
        seen_t = None
        if watcher:
            ok = watcher.wait(lambda m: name in m and m[name][1] == expect and m[name][0] >= t_start, o.timeout)
            seen_t = watcher.latest[name][0] if ok else None
        left = t_start + o.window - time.monotonic()
        if left > 0:
            time.sleep(left)
        d = Meter.between(before, meter.sample())
        for key in ("watcher_cpu", "consul_cpu", "rx", "tx"):
            d[key + "_net"] = d[key] - out["idle"][key] * d["s"]
        d["prop_ms"] = (seen_t - t_ret) * 1000 if seen_t else None
        d["prop_from_start_ms"] = (seen_t - t_start) * 1000 if seen_t else None
        d["service"], d["status"] = name, status
        changes.append(d)
        out["connections_max"] = max(out["connections_max"], meter.connections())
        if watcher and seen_t is None:
            log(f"{mode} @ {n}: change {k} ({name} {status}) not seen within {o.timeout} s")
    conn.close()
    out["changes"] = changes
    if watcher:
        out["watcher_rss_kb"] = _rss(watcher.proc.pid)
        out["watcher_warnings"] = sum(1 for _, line in list(watcher.proc.lines) if " WARN " in line or " ERROR " in line)
        procs.stop(watcher.proc)
    log(f"{mode} @ {n}: " + summary_line(out))
    return out


def _rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summary_line(r):
    c = r["changes"]
    return (f"watcher {fmt_ms(med([x['watcher_cpu_net'] for x in c]))} CPU, consul {fmt_ms(med([x['consul_cpu_net'] for x in c]))} CPU, "
            f"{fmt_kb(med([x['rx'] for x in c]))} per change; p50 {fmt_ms1(med([x['prop_ms'] for x in c]))}, "
            f"{r['connections_max']} connections")


def _mb(kb):
    return "–" if kb is None else f"{kb / 1024:.1f} MB"


def fmt_ms(s):
    return "–" if s is None else f"{s * 1000:.1f} ms"


def fmt_ms1(ms):
    return "–" if ms is None else f"{ms:.1f} ms"


def fmt_kb(b):
    return "–" if b is None else f"{b / 1000:.1f} kB"


# ---- report ----

def endpoint_report(endpoints):
    lines = ["", "What Consul 1.8.7's endpoints cost per request (mean of 5, this server), and whether a blocking "
             "query on them returns when another service's check changes (svc-00001 watched, svc-00002 changed):", "",
             "| services | endpoint | what | answer | Consul CPU / request | wakes on another service's change |",
             "|---|---|---|---|---|---|"]
    for n, rows in endpoints:
        for r in rows:
            lines.append(f"| {n:,} | `{r['path']}` | {r['what']} | {r['bytes'] / 1000:.1f} kB | "
                         f"{r['consul_cpu'] * 1000:.2f} ms | {r['wakes_on_unrelated']} |")
    return "\n".join(lines) + "\n"


def report(o, results, header):
    lines = [f"# Change cost by watch mode — {header['date']}", "",
             f"- command: `{header['command']}`",
             f"- machine: {header['machine']}",
             f"- Consul: {header['consul']} (one server, HTTP and HTTPS listeners); watcher: release build",
             f"- {INSTANCES} instances per service, each with a passing check and the tag `gateway`, on {NODES} catalog "
             f"nodes; {o.changes} changes per mode (check critical / passing again), window {o.window} s per change, "
             f"idle rate measured over {o.idle} s and subtracted",
             f"- machine busy before the run: {header['busy']:.0f}%", "",
             "Per change, medians (max in parentheses). CPU in ms of CPU time; bytes = what Consul sent to the "
             "watcher (kernel socket counters, TLS and HTTP framing included). `none` = no watcher: the change's "
             "own cost to Consul.", "",
             "| services | mode | watcher CPU / change | Consul CPU / change | bytes from Consul / change | "
             "bytes to Consul / change | propagation p50 (max) | not seen | connections | load time | "
             "idle: watcher CPU/s, Consul CPU/s, bytes/s | watcher warnings | watcher RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["changes"]
        mx = lambda k: max((x[k] for x in c if x[k] is not None), default=None)  # noqa: E731
        props = [x["prop_ms"] for x in c]
        missed = sum(1 for x in c if x["prop_ms"] is None) if r["mode"] != "none" else None
        idle = r["idle"]
        mode = r["mode"] + (f" (≤ {r['max_connections']} conns)" if r.get("max_connections") else "")
        load = "–" if r.get("load_s") is None else f"{r['load_s']:.1f} s"
        lines.append(
            f"| {r['services']:,} | {mode} | {fmt_ms(med([x['watcher_cpu_net'] for x in c]))} ({fmt_ms(mx('watcher_cpu_net'))}) "
            f"| {fmt_ms(med([x['consul_cpu_net'] for x in c]))} ({fmt_ms(mx('consul_cpu_net'))}) "
            f"| {fmt_kb(med([x['rx'] for x in c]))} ({fmt_kb(mx('rx'))}) | {fmt_kb(med([x['tx'] for x in c]))} "
            f"| {fmt_ms1(med(props)) if r['mode'] != 'none' else '–'} ({fmt_ms1(mx('prop_ms')) if r['mode'] != 'none' else '–'}) "
            f"| {'–' if missed is None else missed} | {r['connections_max'] if r['mode'] != 'none' else '–'} "
            f"| {load} "
            f"| {idle['watcher_cpu'] * 1000:.1f} ms, {idle['consul_cpu'] * 1000:.1f} ms, {idle['rx'] / 1000:.1f} kB "
            f"| {r.get('watcher_warnings', '–')} | {_mb(r.get('watcher_rss_kb'))} |")
    lines += ["", "Per change, raw (before subtracting the idle rate): see `results.json` in the run directory.", ""]
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="2500,5000", help="service counts, ascending (default 2500,5000)")
    p.add_argument("--modes", default="none,multiplexed,streams,streams-wide",
                   help="none, multiplexed, streams, streams-wide (default: all)")
    p.add_argument("--changes", type=int, default=20, help="changes measured per mode and size (default 20)")
    p.add_argument("--window", type=float, default=1.0, help="s measured per change, from the call's start (default 1)")
    p.add_argument("--idle", type=float, default=10.0, help="s of idle measured before the changes (default 10)")
    p.add_argument("--settle", type=float, default=5.0, help="s to wait after loading (default 5)")
    p.add_argument("--timeout", type=float, default=15.0, help="s to wait for one change to show (default 15)")
    p.add_argument("--load-timeout", type=float, default=120.0, help="s to wait for every service to load")
    p.add_argument("--max-connections", type=int, default=16, help="the streams mode's cap (default 16)")
    p.add_argument("--bin-dir", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")),
                                                     "release"))
    p.add_argument("--consul-bin", default=os.path.join(REPO, ".tools", "consul"))
    p.add_argument("--write", help="also write the report to this file")
    p.add_argument("--no-endpoints", dest="endpoints", action="store_false",
                   help="skip the per-endpoint costs and wake-up checks")
    p.add_argument("--smoke", action="store_true", help="200 services, 4 changes, short windows")
    o = p.parse_args(argv)
    if o.smoke:
        o.sizes, o.changes, o.idle, o.settle = "200", 4, 2.0, 1.0
    o.sizes = [int(s) for s in o.sizes.split(",")]
    o.modes = [m.strip() for m in o.modes.split(",") if m.strip()]
    return o


def main(argv):
    o = parse_args(argv)
    run_dir = os.path.join(BENCH_DIR, "out", "change-cost-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(run_dir)
    procs = Procs(run_dir)
    busy = machine_busy_percent(2.0)
    header = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "bash bench/change_cost.sh " + " ".join(shlex.quote(a) for a in argv),
        "machine": f"{os.cpu_count()} CPUs ({_cpu_model()}), {platform.system()} {platform.release()}",
        "busy": busy,
    }
    results, endpoints = [], []
    try:
        consul = TlsConsul(procs, o.consul_bin, run_dir)
        header["consul"] = consul.version()
        registered = 0
        for n in o.sizes:
            t0 = time.monotonic()
            register(consul, registered, n)
            log(f"registered services {registered}..{n - 1} x {INSTANCES} in {time.monotonic() - t0:.1f} s")
            registered = n
            names = [f"svc-{i:05d}" for i in range(n)]
            if o.endpoints:
                endpoints.append((n, endpoint_costs(consul, n)))
            for mode in o.modes:
                if mode == "streams-wide" and math.ceil((n + 1) / STREAMS_PER_CONNECTION) <= o.max_connections:
                    continue
                results.append(run_mode(o, procs, consul, n, mode, names))
                with open(os.path.join(run_dir, "results.json"), "w") as f:
                    json.dump({"header": header, "results": results, "endpoints": endpoints}, f, indent=1)
    except HarnessError as e:
        log(f"harness error: {e}")
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        procs.stop_all()
    text = report(o, results, header) + (endpoint_report(endpoints) if endpoints else "")
    with open(os.path.join(run_dir, "report.md"), "w") as f:
        f.write(text)
    if o.write:
        with open(o.write, "w") as f:
            f.write(text)
    print(text)
    return 0


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
