"""The fixtures: a Consul agent, nginx backends, nginx as the reference proxy, the gateway.

The harness talks to Consul from source address 127.0.0.2, so that its own connections never
count against Consul's per-client-IP connection limit that the gateway's watcher (on 127.0.0.1)
runs into at scale. All traffic stays on loopback.
"""

import contextlib
import http.client
import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .procs import HarnessError, free_port, wait_until

HARNESS_SOURCE_IP = "127.0.0.2"
TXN_MAX_OPS = 64  # Consul's limit on the operations of one /v1/txn


class Consul:
    """A Consul agent on loopback. mode "server" (the default): a single server as in production
    (`-server -bootstrap-expect=1`, Raft data in the run directory, no update check). mode "dev":
    `consul agent -dev`, which also pretty-prints every HTTP answer (about 2x the bytes and 3x
    Consul's CPU for the large catalog reads a watcher makes at scale), which no production agent
    does."""

    def __init__(self, procs, binary, run_dir, mode="server"):
        self.procs = procs
        self.binary = binary
        self.mode = mode
        self.port = free_port()
        p2, p3, p4 = free_port(), free_port(), free_port()
        hcl = f"ports {{ http = {self.port}, dns = -1, grpc = -1, serf_lan = {p2}, serf_wan = {p3}, server = {p4} }}"
        argv = [binary, "agent", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-hcl", hcl]
        if mode == "dev":
            argv.insert(2, "-dev")
        else:
            data = os.path.join(run_dir, "consul-data")
            os.makedirs(data, exist_ok=True)
            argv += ["-server", "-bootstrap-expect=1", "-data-dir", data, "-node", "bench-consul",
                     "-hcl", "disable_update_check = true", "-hcl", "disable_anonymous_signature = true",
                     "-hcl", "performance { raft_multiplier = 1 }"]
        self.proc = procs.start("consul", argv)
        self.addr = f"http://127.0.0.1:{self.port}"

        def ready():
            if not self.proc.alive():
                raise HarnessError(f"consul exited; see {self.proc.log_path}")
            try:
                status, body = self.request("GET", "/v1/status/leader")
                if status != 200 or body.strip() in (b"", b'""'):
                    return False
                status, body = self.request("GET", "/v1/catalog/nodes")
                return status == 200 and json.loads(body)
            except (OSError, http.client.HTTPException, ValueError):
                return False

        if not wait_until(ready, 30, 0.1):
            raise HarnessError(f"consul did not elect itself leader within 30 s; see {self.proc.log_path}")

    def connection(self, timeout=10):
        return http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=timeout, source_address=(HARNESS_SOURCE_IP, 0)
        )

    def request(self, method, path, body=None, conn=None):
        """(status, body bytes); uses conn (kept alive) if given, else a one-off connection."""
        own = conn is None
        c = conn or self.connection()
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            if own:
                c.close()

    def must(self, method, path, body=None, conn=None):
        status, data = self.request(method, path, body, conn)
        if status != 200:
            raise HarnessError(f"consul {method} {path}: {status} {data[:200]!r}")
        return data

    def agent_register(self, sid, name, port, conn=None):
        self.must("PUT", "/v1/agent/service/register",
                  {"ID": sid, "Name": name, "Address": "127.0.0.1", "Port": port}, conn)

    def agent_deregister(self, sid, conn=None):
        self.must("PUT", f"/v1/agent/service/deregister/{sid}", None, conn)

    def catalog_register(self, node, sid, name, port, check=False, conn=None):
        """Registers on a node that no agent owns (so anti-entropy leaves it alone); with check=True the
        instance gets a passing check of its own, as an agent-managed registration would have."""
        body = {"Node": node, "Address": "127.0.0.1",
                "Service": {"ID": sid, "Service": name, "Address": "127.0.0.1", "Port": port}}
        if check:
            body["Check"] = {"CheckID": f"service:{sid}", "Name": f"{name} alive", "Status": "passing",
                             "ServiceID": sid}
        self.must("PUT", "/v1/catalog/register", body, conn)

    def set_check(self, node, sid, name, port, status, tags=(), conn=None):
        """Re-registers a catalog instance with its own check in `status` (passing, warning, critical):
        how a check flips on a node no agent owns."""
        body = {"Node": node, "Address": "127.0.0.1",
                "Service": {"ID": sid, "Service": name, "Address": "127.0.0.1", "Port": port, "Tags": list(tags)},
                "Check": {"CheckID": f"service:{sid}", "Name": f"{name} alive", "Status": status, "ServiceID": sid}}
        self.must("PUT", "/v1/catalog/register", body, conn)

    def register_many(self, instances, workers=16):
        """Registers many catalog instances fast: `/v1/txn` batches (Consul takes at most 64
        operations per transaction) over `workers` parallel keep-alive connections. `instances`:
        dicts with node, sid, name, port, and optionally tags (list) and check (a status, or None for
        no check). Nodes are created first. Returns the seconds it took."""
        t0 = time.monotonic()
        with contextlib.closing(self.connection()) as c:
            for node in sorted({i["node"] for i in instances}):
                self.must("PUT", "/v1/catalog/register", {"Node": node, "Address": "127.0.0.1"}, c)
        batches, ops = [], []
        for i in instances:
            op = [{"Service": {"Verb": "set", "Node": i["node"], "Service": {
                "ID": i["sid"], "Service": i["name"], "Address": "127.0.0.1", "Port": i["port"],
                "Tags": list(i.get("tags") or [])}}}]
            if i.get("check"):
                op.append({"Check": {"Verb": "set", "Check": {
                    "Node": i["node"], "CheckID": f"service:{i['sid']}", "Name": f"{i['name']} alive",
                    "Status": i["check"], "ServiceID": i["sid"]}}})
            if len(ops) + len(op) > TXN_MAX_OPS:
                batches.append(ops)
                ops = []
            ops += op
        if ops:
            batches.append(ops)
        local, conns = threading.local(), []

        def send(batch):
            if not hasattr(local, "c"):
                local.c = self.connection(timeout=60)
                conns.append(local.c)
            self.must("PUT", "/v1/txn", batch, local.c)

        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(send, batches))
        finally:
            for c in conns:
                c.close()
        return time.monotonic() - t0

    def catalog_deregister(self, node, sid, conn=None):
        self.must("PUT", "/v1/catalog/deregister", {"Node": node, "ServiceID": sid}, conn)

    def version(self):
        try:
            out = subprocess.run([self.binary, "version"], capture_output=True, text=True, timeout=10).stdout
            return out.splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "?"


# ---- nginx ----

def _nginx_common(prefix):
    temp = "".join(f"    {k}_temp_path {prefix}/tmp/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return temp


def _start_nginx(procs, name, conf_text, run_dir, cpus=None):
    prefix = os.path.join(run_dir, name)
    os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    return procs.start(name, ["nginx", "-p", prefix, "-c", conf, "-e", os.path.join(prefix, "error.log")], cpus=cpus)


def backend_conf(prefix, ports, workers=None):
    """One process (no master) answering {"ip":"127.0.0.1","port":P} on each port, so that
    killing that one pid kills the backend. workers (e.g. "auto", "2"): a master process and that
    many worker processes instead, all serving every port."""
    servers = "".join(
        f"    server {{ listen 127.0.0.1:{p}; location / {{ return 200 '{{\"ip\":\"127.0.0.1\",\"port\":{p}}}'; }} }}\n"
        for p in ports
    )
    procs = "master_process off;\nworker_processes 1;" if workers is None else f"worker_processes {workers};"
    return f"""daemon off;
{procs}
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/json;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
{_nginx_common(prefix)}{servers}}}
"""


class Backends:
    """N single-process nginx backends (one port each), restartable one at a time."""

    def __init__(self, procs, run_dir, n, cpus=None):
        self.procs, self.run_dir, self.cpus = procs, run_dir, cpus
        self.ports = [free_port() for _ in range(n)]
        self.by_port = {}
        for p in self.ports:
            self.start(p)

    def start(self, port):
        name = f"backend-{port}"
        prefix = os.path.join(self.run_dir, name)
        proc = _start_nginx(self.procs, name, backend_conf(prefix, [port]), self.run_dir, self.cpus)
        self.by_port[port] = proc
        wait_http_ok(f"http://127.0.0.1:{port}/", 10, proc, f"backend {port}")

    def kill(self, port):
        """SIGKILL: the instance dies without deregistering, as a crashed process would."""
        proc = self.by_port.pop(port)
        self.procs.stop(proc, sig=9)

    def stop_all(self):
        """Stops every backend (SIGTERM), e.g. to serve the same ports from one process for a while."""
        for port in list(self.by_port):
            self.procs.stop(self.by_port.pop(port))

    def start_all(self):
        """Starts every backend not running (after stop_all)."""
        for port in self.ports:
            if port not in self.by_port:
                self.start(port)


def start_multi_backend(procs, run_dir, name, ports, cpus=None, workers=None):
    """One nginx serving every port: one process, or with workers (e.g. "auto") a master and workers."""
    prefix = os.path.join(run_dir, name)
    proc = _start_nginx(procs, name, backend_conf(prefix, ports, workers), run_dir, cpus)
    for p in ports:
        wait_http_ok(f"http://127.0.0.1:{p}/", 10, proc, f"{name} port {p}")
    return proc


def reference_conf(prefix, listen, backend_ports, workers="1", upstream="tuned", keepalive=32):
    """nginx as the reference proxy. upstream "tuned" (the comparison's default): pooled HTTP/1.1
    connections to the instances (`keepalive 32`), `random` like the gateway's default balancing.
    upstream "default": what nginx does without tuning (an upstream block with the servers and a
    plain `proxy_pass`: round-robin, HTTP/1.0, a new connection to the instance per request).
    workers: `worker_processes` ("1", "auto", ...). keepalive: the tuned pool's size per worker (idle
    connections kept, over all instances). The client side is the same in both."""
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in backend_ports)
    if upstream == "tuned":
        pool = "        random;\n", f"        keepalive {keepalive};\n        keepalive_requests 1000000;\n"
        location = ("            proxy_http_version 1.1;\n"
                    "            proxy_set_header Connection \"\";\n")
    elif upstream == "default":
        pool, location = ("", ""), ""
    else:
        raise ValueError(f"upstream: tuned or default, not {upstream!r}")
    return f"""daemon off;
worker_processes {workers};
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
{_nginx_common(prefix)}    upstream backends {{
{pool[0]}{servers}{pool[1]}    }}
    server {{
        listen 127.0.0.1:{listen};
        location /service-web/ {{
            proxy_pass http://backends/;
{location}        }}
    }}
}}
"""


def start_reference(procs, run_dir, backend_ports, cpus=None, workers="1", upstream="tuned", name="nginx-ref",
                    keepalive=32):
    port = free_port()
    prefix = os.path.join(run_dir, name)
    proc = _start_nginx(procs, name, reference_conf(prefix, port, backend_ports, workers, upstream, keepalive),
                        run_dir, cpus)
    wait_http_ok(f"http://127.0.0.1:{port}/service-web/", 10, proc, "nginx reference proxy")
    proc.port = port
    return proc


# ---- gateway ----

def start_gateway(procs, bin_dir, name, consul, services, extra=(), cpus=None, ready_timeout=30, wait_ready=True,
                  wrapper=()):
    """Starts the gateway (under `wrapper`, e.g. valgrind, if given); returns (proc, seconds from start
    to /readyz 200 or None). No `services`: no `--services` (routes from tags only)."""
    port, admin = free_port(), free_port()
    argv = [*wrapper, os.path.join(bin_dir, "gateway"), "--listen", f"127.0.0.1:{port}", "--admin-listen",
            f"127.0.0.1:{admin}", "--consul", consul.addr, *(["--services", ",".join(services)] if services else []),
            *extra]
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    t0 = time.monotonic()
    proc = procs.start(name, argv, cpus=cpus, capture=True, env=env)
    proc.port, proc.admin = port, admin
    proc.argv = argv
    if not wait_ready:
        return proc, None

    def ready():
        if not proc.alive():
            raise HarnessError(f"{name} exited with {proc.popen.returncode}; see {proc.log_path}")
        return http_status(f"http://127.0.0.1:{admin}/readyz") == 200

    ok = wait_until(ready, ready_timeout, 0.01)
    return proc, (time.monotonic() - t0) if ok else None


def _get(url, timeout):
    """GET url: (status, body bytes). Raises OSError / HTTPException."""
    host, _, rest = url[len("http://"):].partition("/")
    h, _, p = host.partition(":")
    c = http.client.HTTPConnection(h, int(p), timeout=timeout)
    try:
        c.request("GET", "/" + rest)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def http_status(url, timeout=2):
    try:
        return _get(url, timeout)[0]
    except (OSError, http.client.HTTPException):
        return None


def http_json(url, timeout=5):
    status, body = _get(url, timeout)
    return status, json.loads(body or b"null")


def wait_http_ok(url, timeout, proc, what):
    def ok():
        if not proc.alive():
            raise HarnessError(f"{what} exited; see {proc.log_path}")
        return http_status(url) == 200
    if not wait_until(ok, timeout, 0.02):
        raise HarnessError(f"{what} did not answer 200 at {url} within {timeout} s; see {proc.log_path}")
