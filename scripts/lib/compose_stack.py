"""Helpers shared by the container tests (scripts/e2e_docker.py, scripts/e2e_faults.py): run
docker-compose.yml under a unique project name on free loopback ports, poll with deadlines, hammer
the gateway with a client, count checks.

Traffic goes only to 127.0.0.1 (ports this project publishes); everything else is docker/compose
commands against the project's own containers.
"""

import calendar
import ipaddress
import json
import os
import random
import re
import shlex
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICE = "service-web"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, check=True, timeout=300, env=None):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return res.stdout.strip()


def compose_cmd():
    if os.environ.get("COMPOSE"):
        return shlex.split(os.environ["COMPOSE"])
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def used_subnets():
    """IPv4 networks in use here: every Docker network's subnets and the host's routes."""
    nets = []
    ids = run(["docker", "network", "ls", "-q"]).split()
    if ids:
        for n in json.loads(run(["docker", "network", "inspect", *ids])):
            for cfg in (n.get("IPAM") or {}).get("Config") or []:
                try:
                    nets.append(ipaddress.ip_network(cfg.get("Subnet", ""), strict=False))
                except ValueError:
                    pass
    try:
        with open("/proc/net/route") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                dest, mask = (ipaddress.IPv4Address(int(c, 16).to_bytes(4, "little")) for c in (cols[1], cols[7]))
                if int(mask):
                    nets.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    except OSError:
        pass
    return nets


def free_subnet():
    """A /24 in 10.213.0.0/16 that no Docker network or host route overlaps: docker-compose.yml's
    `consul` network (CONSUL_SUBNET) for one test stack."""
    used = [n for n in used_subnets() if n.version == 4]
    for third in random.sample(range(256), 256):
        cand = ipaddress.ip_network(f"10.213.{third}.0/24")
        if not any(cand.overlaps(u) for u in used):
            return str(cand)
    raise RuntimeError("no free /24 in 10.213.0.0/16 for the consul network (set CONSUL_SUBNET)")


def wait_for(what, timeout, f, interval=0.25):
    """Polls f() until it returns a truthy value; raises after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = f()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - a poll may fail while things start
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http_get(url, timeout=5, headers=None):
    """(status, body); status 0 means no HTTP answer at all."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


class Stack:
    """docker-compose.yml under a unique project name (`prefix` + pid + random), its ports on free
    loopback ports, its `consul` network on a free subnet. `env` adds or overrides variables."""

    def __init__(self, prefix="cgwe2e", env=None):
        self.compose = compose_cmd()
        version = subprocess.run(self.compose + ["version"], capture_output=True, text=True).stdout.strip()
        log(f"compose: {' '.join(self.compose)} ({version.splitlines()[0] if version else 'version unknown'})")
        self.project = f"{prefix}{os.getpid()}{random.randint(100, 999)}"
        self.env = dict(os.environ)
        self.gateway_port = free_port()
        self.admin_port = free_port()
        self.consul_ui_port = free_port()
        self.env.update(
            COMPOSE_PROJECT_NAME=self.project,
            GATEWAY_PORT=str(self.gateway_port),
            GATEWAY_BIND="127.0.0.1",
            GATEWAY_ADMIN_PORT=str(self.admin_port),
            CONSUL_UI_PORT=str(self.consul_ui_port),
            CONSUL_UI_BIND="127.0.0.1",
        )
        if not os.environ.get("CONSUL_SUBNET"):
            self.env["CONSUL_SUBNET"] = free_subnet()
        self.env.update(env or {})

    def c(self, *args, check=True, timeout=300):
        cmd = self.compose + ["-f", os.path.join(REPO, "docker-compose.yml"), "-p", self.project, *args]
        return run(cmd, check=check, timeout=timeout, env=self.env)

    def url(self, path):
        return f"http://127.0.0.1:{self.gateway_port}{path}"

    def admin(self, path):
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def containers(self, service):
        ids = self.c("ps", "-q", service).split()
        return [i for i in ids if i]

    def running_backends(self, service="serviceweb"):
        """{container id: ip} of running containers of a compose service (serviceweb by default)."""
        out = {}
        for cid in self.containers(service):
            info = json.loads(run(["docker", "inspect", cid]))[0]
            if info["State"]["Running"] and not info["State"]["Paused"]:
                ips = [n["IPAddress"] for n in info["NetworkSettings"]["Networks"].values()]
                out[info["Id"]] = ips[0]
        return out

    def agent_api(self, path):
        port = self.c("port", "consul-agent", "8500").rsplit(":", 1)[1]
        status, body = http_get(f"http://127.0.0.1:{port}{path}")
        if status != 200:
            raise RuntimeError(f"consul-agent {path}: {status} {body[:200]}")
        return json.loads(body)

    def raft_leader(self):
        """Node name of the Raft leader, asked through the client agent."""
        agent = self.containers("consul-agent")[0]
        out = run(["docker", "exec", agent, "consul", "operator", "raft", "list-peers"], check=False)
        for line in out.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 4 and cols[3] == "leader":
                return cols[0]
        return None

    def gateway_logs(self):
        return self.c("logs", "--no-color", "gateway", check=False)

    def down(self):
        self.c("down", "-v", "--remove-orphans", "-t", "2", check=False)


def log_time(line):
    """Unix time of an RFC 3339 UTC timestamp (tracing's format) in a log line, or None."""
    m = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z", line)
    if not m:
        return None
    secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return secs + float(m.group(2) or 0)


def sample_ips(stack, n):
    """Sends n requests through the gateway; returns (ips seen, failures)."""
    ips, failures = set(), []
    for _ in range(n):
        status, body = http_get(stack.url(f"/{SERVICE}/getRemoteIp"))
        if status == 200:
            ips.add(json.loads(body)["ip"])
        else:
            failures.append((status, body[:120]))
    return ips, failures


class Hammer(threading.Thread):
    """A client sending requests back to back; records (time sent, status, ip, time answered)."""

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.stack, self.stop, self.samples = stack, threading.Event(), []

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            status, body = http_get(self.stack.url(f"/{SERVICE}/getRemoteIp"), timeout=10)
            ip = None
            if status == 200:
                try:
                    ip = json.loads(body)["ip"]
                except ValueError:
                    status = -1
            self.samples.append((t, status, ip, time.monotonic()))
            time.sleep(0.01)

    def finish(self):
        self.stop.set()
        self.join(15)
        return self.samples


def bad(samples):
    return [s for s in samples if s[1] != 200]


def longest_gap(samples, start=None, end=None):
    """Longest time in seconds between two successful answers (from `start` to the first and from
    the last to `end`, when given)."""
    times = [s[3] for s in samples if s[1] == 200]
    if start is not None:
        times.insert(0, start)
    if end is not None:
        times.append(end)
    return max((b - a for a, b in zip(times, times[1:])), default=float("inf"))


class Results:
    def __init__(self):
        self.passed, self.failed = 0, 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            log(f"PASS {name}{' (' + detail + ')' if detail else ''}")
        else:
            self.failed += 1
            log(f"FAIL {name}: {detail}")
        return ok
