#!/usr/bin/env python3
"""Fault scenarios on the compose stack, under load (driven by scripts/e2e-faults.sh; issue 14).

One stack (docker-compose.yml, `GATEWAY_CONSISTENCY=stale`, `GATEWAY_STATE_FILE`, a unique project
name, free loopback ports, the `consul` network on a free subnet) goes through five faults in turn. During each, a
client sends requests back to back through the gateway, and a monitor polls the gateway's
`/readyz` and `/services` every 0.1 s. Each scenario prints a line with the client errors, the
longest gap between two successful answers and the time to converge, then PASS/FAIL per check.

- partition: `docker network disconnect <project>_consul <agent>` cuts exactly agent <-> servers
  (the gateway, the registrator and the instances reach the agent over `default`). One instance
  is started during the cut (the agent accepts it locally; it cannot reach the catalog), then the
  agent is reconnected (same address) and one instance is stopped at once.
  Checks: no client error; /readyz 503 with a "stale" reason during the cut; within 5 s of the
  reconnect the gateway routes to exactly the running instances (both changes) and /readyz is 200.
- quorum loss: `docker kill` of 2 of the 3 servers; one instance started meanwhile; the servers
  started again (empty: their data is in tmpfs). Checks: no client error; a stale read is
  answered by the surviving server throughout (no leader known) while the instance started
  meanwhile is not in the catalog (every write needs a leader); after the restart the gateway
  converges on the running instances with /readyz 200.
- registrator during a scale-down: scale to 5, `docker kill` the registrator, scale to 2, start
  the registrator again. Checks: no client error; within one resync (15 s) of its start the
  catalog holds exactly the 2 running instances of this stack and the gateway routes to them.
- whole-cluster restart: the 3 servers and the agent are killed and started together; their
  tmpfs data is gone, so Consul starts over empty. Checks: Consul's index went back (reset); the catalog and the gateway converge on exactly the running instances, /readyz 200.
  Client errors are reported, not asserted: between Consul answering empty and the registrator's
  next resync (15 s) there is no instance to route to.
- cold start (`--state-file`, GATEWAY_STATE_FILE in docker-compose.yml): once the file holds the
  live instances, `docker kill` the agent and `docker restart` the gateway. Checks: the first
  answer after it listens is a 200 from the file, every request meanwhile succeeds, /readyz 503
  naming the file; after the agent's start (empty: tmpfs) the gateway converges.
  Then garbage written into the file and the gateway restarted at once, with Consul up: a warning,
  and it converges and rewrites the file.

Five faults on one stack keep the run to about 3 minutes warm. The monitor's samples and the
gateway's own log lines about service-web's instance set are printed per scenario.

Env as scripts/e2e_docker.py (COMPOSE, CONSUL_IMAGE, GATEWAY_IMAGE, E2E_KEEP, CONSUL_SUBNET).
Last line `N passed, N failed`.
"""

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from compose_stack import (  # noqa: E402 - the shared module lives in scripts/lib
    SERVICE,
    Hammer,
    Results,
    Stack,
    bad,
    http_get,
    log,
    longest_gap,
    run,
    sample_ips,
    wait_for,
)

CONVERGE_PARTITION = 5.0
RESYNC = 15.0


class Monitor(threading.Thread):
    """Polls /readyz and /services; samples are (time, readyz status, readyz body, instance ips
    of service-web or None, stale, Consul index)."""

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.stack, self.stop, self.samples = stack, threading.Event(), []

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            rs, rbody = http_get(self.stack.admin("/readyz"), timeout=2)
            ss, sbody = http_get(self.stack.admin("/services"), timeout=2)
            ips, stale, index = None, None, None
            if ss == 200:
                for s in json.loads(sbody)["services"]:
                    if s["service"] == SERVICE:
                        ips = frozenset(i["address"] for i in s["instances"])
                        stale, index = s["stale"], s.get("index")
            self.samples.append((t, rs, rbody, ips, stale, index))
            time.sleep(0.1)

    def finish(self):
        self.stop.set()
        self.join(10)
        return self.samples

    def converged_at(self, after, want):
        """First time after `after` at which the gateway routes to exactly `want`, fresh, and
        /readyz is 200."""
        for t, rs, _, ips, stale, _ in list(self.samples):
            if t >= after and rs == 200 and ips == want and stale is False:
                return t
        return None


def running_ips(stack):
    return frozenset(stack.running_backends().values())


def default_subnet(stack):
    info = json.loads(run(["docker", "network", "inspect", f"{stack.project}_default"]))[0]
    return [ipaddress.ip_network(c["Subnet"]) for c in info["IPAM"]["Config"]]


def catalog_ips(stack, subnets):
    """This stack's service-web instances in the catalog (a stale read on server consul1, whose
    API is published on loopback): other stacks' registrators may register their containers too."""
    status, body = http_get(f"http://127.0.0.1:{stack.consul_ui_port}/v1/catalog/service/{SERVICE}?stale", timeout=3)
    if status != 200:
        raise RuntimeError(f"consul1 catalog: {status} {body[:200]}")
    out = set()
    for e in json.loads(body):
        addr = e.get("ServiceAddress") or e.get("Address")
        if any(ipaddress.ip_address(addr) in n for n in subnets):
            out.add(addr)
    return frozenset(out)


def scale(stack, n):
    """Scale serviceweb alone (--no-deps: the agent may be unhealthy on purpose)."""
    stack.c("up", "-d", "--no-deps", "--no-recreate", "-t", "3", "--scale", f"serviceweb={n}", "serviceweb", timeout=180)
    return wait_for(f"{n} running backends", 60, lambda: (b := running_ips(stack)) and len(b) == n and b)


def wait_routed(stack, want, timeout=60):
    def ok():
        st, body = http_get(stack.admin("/services"))
        if st != 200:
            return False
        for s in json.loads(body)["services"]:
            if s["service"] == SERVICE:
                return frozenset(i["address"] for i in s["instances"]) == want and not s["stale"]
        return False

    wait_for(f"the gateway to route to exactly {sorted(want)}", timeout, ok, interval=0.2)


class Load:
    """The client and the monitor, together."""

    def __init__(self, stack):
        self.hammer, self.monitor = Hammer(stack), Monitor(stack)
        self.hammer.start()
        self.monitor.start()
        self.t0 = time.monotonic()
        time.sleep(1)

    def finish(self):
        self.t1 = time.monotonic()
        return self.hammer.finish(), self.monitor.finish()


def summary(name, samples, converged, ref, t_ref):
    errors = bad(samples)
    conv = f"{converged:.1f} s after {ref}" if converged is not None else f"not converged after {ref}"
    log(f"{name}: {len(errors)} client errors of {len(samples)} requests, "
        f"longest gap {longest_gap(samples):.2f} s, converged {conv}")
    if errors:
        statuses = sorted({e[1] for e in errors})
        log(f"{name}: the errors (status {statuses}) came from {errors[0][0] - t_ref:+.1f} s to "
            f"{errors[-1][0] - t_ref:+.1f} s after {ref}")
    return errors


def transitions(stack, since):
    """The gateway's log lines about service-web's instance set since `since` (Unix time)."""
    res = subprocess.run(["docker", "logs", "--since", f"{since:.3f}", stack.containers("gateway")[0]],
                         capture_output=True, text=True, timeout=30)
    out = res.stdout + res.stderr
    lines = [line.split("Z ", 1)[0][-12:] + " " + line.split("INFO ", 1)[-1].split(" service=")[0]
             for line in out.splitlines() if f"INFO {SERVICE}:" in line]
    return "; ".join(lines)


def consul_index(stack):
    """X-Consul-Index of the catalog's service list on consul1 (a stale read), or None."""
    url = f"http://127.0.0.1:{stack.consul_ui_port}/v1/catalog/services?stale"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return int(resp.headers.get("X-Consul-Index", ""))
    except (OSError, ValueError):
        return None


def node_health(stack, node):
    """The status of every check of `node` in the catalog (a stale read on consul1)."""
    st, body = http_get(f"http://127.0.0.1:{stack.consul_ui_port}/v1/health/node/{node}?stale", timeout=3)
    if st != 200:
        return f"{st} {body[:100]}"
    return {c["CheckID"]: c["Status"] for c in json.loads(body)}


def partition(stack, r):
    agent = stack.containers("consul-agent")[0]
    net = f"{stack.project}_consul"
    ip = run(["docker", "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}', agent])
    load = Load(stack)
    t_cut = time.monotonic()
    run(["docker", "network", "disconnect", net, agent])
    try:
        stale = wait_for("/readyz 503 with a stale reason", 40,
                         lambda: (x := http_get(stack.admin("/readyz"), timeout=2))[0] == 503 and "stale" in x[1] and x,
                         interval=0.2)
        t_stale = time.monotonic() - t_cut
        r.check("partition: /readyz reports stale during the cut", True,
                f"{t_stale:.1f} s after the cut: {stale[1][:160]}")
    except AssertionError as e:
        r.check("partition: /readyz reports stale during the cut", False, str(e))
    before = running_ips(stack)
    during = scale(stack, len(before) + 1)
    time.sleep(max(0.0, 10 - (time.monotonic() - t_cut)))
    routed = [s[3] for s in load.monitor.samples if s[0] > t_cut and s[3] is not None]
    r.check("partition: the instance started during the cut is not routed before the reconnect",
            all(not (ips - before) for ips in routed), f"{len(routed)} samples")
    log(f"partition: before the reconnect ({time.monotonic() - t_cut:.1f} s after the cut) the servers say "
        f"of node consul-agent: {node_health(stack, 'consul-agent')}")
    run(["docker", "network", "connect", "--ip", ip, "--alias", "consul-agent", net, agent])
    t_re = time.monotonic()
    victim = sorted(before)[0]
    vid = next(c for c, a in stack.running_backends().items() if a == victim)
    run(["docker", "stop", "-t", "3", vid])
    want = frozenset(during - {victim})
    try:
        wait_for("convergence after the reconnect", 60, lambda: load.monitor.converged_at(t_re, want), interval=0.2)
    except AssertionError:
        pass
    time.sleep(1)
    samples, _ = load.finish()
    at = load.monitor.converged_at(t_re, want)
    took = None if at is None else at - t_re
    errors = summary("partition", samples, took, "reconnect", t_re)
    cut = [e for e in errors if e[0] < t_re - 1]
    healed = [e for e in errors if e[0] >= t_re - 1]
    r.check("partition: no client errors during the cut", not cut and len(samples) > 20,
            f"{len(samples)} requests, failures {cut[:3]}")
    r.check("partition: no client errors after the reconnect", not healed,
            f"{len(healed)} failures, e.g. {healed[:2]}")
    r.check(f"partition: converged within {CONVERGE_PARTITION:.0f} s of the reconnect",
            took is not None and took <= CONVERGE_PARTITION,
            f"{took if took is None else round(took, 2)} s; want {sorted(want)}")


def quorum_loss(stack, r, subnets):
    victims = [stack.containers(s)[0] for s in ("consul2", "consul3")]
    load = Load(stack)
    t_kill = time.monotonic()
    run(["docker", "kill", *victims])
    before_catalog = catalog_ips(stack, subnets)
    during = scale(stack, len(running_ips(stack)) + 1)
    new = during - before_catalog
    time.sleep(max(0.0, 12 - (time.monotonic() - t_kill)))
    # What still works without a quorum: stale reads, on the surviving server; no write commits.
    st, body = http_get(f"http://127.0.0.1:{stack.consul_ui_port}/v1/status/leader", timeout=3)
    cat = catalog_ips(stack, subnets)
    r.check("quorum loss: the surviving server answers stale reads; the instance started meanwhile is "
            "not in the catalog (writes need a quorum)", cat == before_catalog and not (cat & new),
            f"catalog {sorted(cat)}, new {sorted(new)}; consul1's /v1/status/leader: {st} {body.strip()}")
    lost = [s for s in load.monitor.samples if s[0] > t_kill + 8]
    not_ready = [s for s in lost if s[1] != 200]
    log(f"quorum loss: /readyz not 200 in {len(not_ready)} of {len(lost)} samples from 8 s after the kill "
        f"(GATEWAY_CONSISTENCY={stack.env.get('GATEWAY_CONSISTENCY')})"
        + (f", e.g. {not_ready[0][2][:160]}" if not_ready else ""))
    t_start = time.monotonic()
    run(["docker", "start", *victims])
    try:
        wait_for("convergence after the servers' restart", 90,
                 lambda: load.monitor.converged_at(t_start, during), interval=0.2)
    except AssertionError:
        pass
    leader_at = time.monotonic() - t_start
    time.sleep(1)
    samples, _ = load.finish()
    at = load.monitor.converged_at(t_start, during)
    took = None if at is None else at - t_start
    errors = summary("quorum loss", samples, took, "the servers' start", t_start)
    r.check("quorum loss: no client errors", not errors and len(samples) > 20,
            f"{len(samples)} requests, failures {errors[:3]}")
    r.check("quorum loss: converged after the servers' start (within 60 s)", took is not None and took <= 60,
            f"{took if took is None else round(took, 2)} s (polled until {leader_at:.1f} s)")


def registrator_scale_down(stack, r, subnets):
    five = scale(stack, 5)
    wait_routed(stack, five)
    reg = stack.containers("registrator")[0]
    load = Load(stack)
    run(["docker", "kill", reg])
    two = scale(stack, 2)
    t_start = time.monotonic()
    run(["docker", "start", reg])

    def consul_exact():
        return catalog_ips(stack, subnets) == two

    try:
        wait_for("the catalog to hold exactly the 2 live instances", RESYNC + 15, consul_exact, interval=0.2)
        t_consul = time.monotonic() - t_start
    except AssertionError:
        t_consul = None
    try:
        wait_for("the gateway to converge", 30, lambda: load.monitor.converged_at(t_start, two), interval=0.2)
    except AssertionError:
        pass
    time.sleep(1)
    samples, _ = load.finish()
    at = load.monitor.converged_at(t_start, two)
    errors = summary("registrator during a scale-down", samples, None if at is None else at - t_start,
                     "the registrator's start", t_start)
    r.check("registrator: no client errors", not errors and len(samples) > 20,
            f"{len(samples)} requests, failures {errors[:3]}")
    r.check(f"registrator: within one resync ({RESYNC:.0f} s) Consul holds exactly the 2 live instances",
            t_consul is not None and t_consul <= RESYNC,
            f"{t_consul if t_consul is None else round(t_consul, 2)} s after its start; catalog "
            f"{sorted(catalog_ips(stack, subnets))}, live {sorted(two)}")


def cluster_restart(stack, r, subnets):
    # The agent first: the partition scenario reconnected it with a fixed address (--ip), which a
    # server started before it could take (dynamic addresses are handed out again after a kill).
    consul = [stack.containers(s)[0] for s in ("consul-agent", "consul1", "consul2", "consul3")]
    want = running_ips(stack)
    load = Load(stack)
    index_before = consul_index(stack)
    run(["docker", "kill", *consul])
    t_start = time.monotonic()
    run(["docker", "start", *consul])

    def done():
        return catalog_ips(stack, subnets) == want and load.monitor.converged_at(t_start, want)

    try:
        wait_for("the catalog and the gateway to converge", 120, done, interval=0.5)
    except AssertionError:
        pass
    time.sleep(1)
    samples, _ = load.finish()
    at = load.monitor.converged_at(t_start, want)
    took = None if at is None else at - t_start
    errors = summary("whole-cluster restart", samples, took, "the start", t_start)
    index_after = consul_index(stack)
    r.check("whole-cluster restart: Consul's index was reset", None not in (index_before, index_after)
            and index_after < index_before, f"X-Consul-Index {index_before} before, {index_after} after")
    try:
        cat = catalog_ips(stack, subnets)
    except RuntimeError as e:
        cat = str(e)
    r.check("whole-cluster restart: Consul holds exactly the live instances, the gateway routes to them, "
            "/readyz 200", took is not None and cat == want,
            f"{took if took is None else round(took, 2)} s; catalog {cat}, live {sorted(want)}")
    ips, failures = sample_ips(stack, 20)
    r.check("whole-cluster restart: requests reach every live instance afterwards", ips == set(want) and not failures,
            f"seen {sorted(ips)}, failures {failures[:3]}")
    log(f"whole-cluster restart: {len(errors)} client errors while Consul was empty (reported, not asserted)")


def state_file_holds(stack, gw, path, want):
    out = run(["docker", "exec", gw, "cat", path], check=False)
    return out.startswith("gateway-state-file ") and all(f'"{ip}"' in out for ip in want)


def cold_start(stack, r):
    gw, agent = stack.containers("gateway")[0], stack.containers("consul-agent")[0]
    path = stack.env["GATEWAY_STATE_FILE"]
    want = running_ips(stack)
    wait_for("the state file to hold the live instances", 20, lambda: state_file_holds(stack, gw, path, want),
             interval=0.5)
    load = Load(stack)
    # Killed, not stopped: a stopped client agent leaves the cluster, and Consul then answers that
    # its services are gone (a true answer the gateway would rightly follow and store).
    run(["docker", "kill", agent])
    run(["docker", "restart", "-t", "3", gw])
    t_up = time.monotonic()
    first = wait_for("the restarted gateway to answer", 30,
                     lambda: next((x for x in list(load.hammer.samples) if x[0] >= t_up and x[1] != 0), None),
                     interval=0.1)
    rs = wait_for("/readyz 503 naming the state file", 10,
                  lambda: (x := http_get(stack.admin("/readyz"), timeout=2))[0] == 503 and "state file" in x[1] and x,
                  interval=0.2)
    time.sleep(2)
    t_back = time.monotonic()
    served = [x for x in load.hammer.samples if t_up <= x[0] < t_back]
    refused = [x for x in served if x[1] == 0 and x[0] < first[0]]
    wrong = [x for x in served if x[0] >= first[0] and x[1] != 200]
    r.check("cold start: with Consul down, the first answer after the gateway listens is a 200 from the file",
            first[1] == 200 and first[2] in want, f"first {first[1:3]} after {len(refused)} refused connections")
    r.check("cold start: every request served while Consul is down succeeds", not wrong and len(served) > 10,
            f"{len(served)} requests, failures {wrong[:3]}")
    r.check("cold start: /readyz 503, serving from the state file", True, rs[1][:200])
    run(["docker", "start", agent])
    try:
        wait_for("the catalog and the gateway to converge", 60,
                 lambda: catalog_ips(stack, default_subnet(stack)) == want and load.monitor.converged_at(t_back, want),
                 interval=0.5)
    except AssertionError:
        pass
    time.sleep(1)
    samples, _ = load.finish()
    at = load.monitor.converged_at(t_back, want)
    took = None if at is None else at - t_back
    after = [x for x in samples if x[0] >= t_back]
    summary("cold start", after, took, "the agent's start", t_back)
    r.check("cold start: converged after the agent's start (within one resync + 15 s)", took is not None and took <= 30,
            f"{took if took is None else round(took, 2)} s; the agent restarts empty (tmpfs): its services come back "
            f"with the registrator's resync; {len(bad(after))} client errors meanwhile (reported, not asserted)")
    # A corrupt file is ignored with a warning; the gateway starts and converges anyway. The
    # garbage and the SIGTERM (PID 1 is the gateway) in one step: a running gateway may replace
    # the file with a good one at any second (it writes when a set changes). It exits 0 and Docker
    # restarts it (unless-stopped); `docker start` covers a slower restart.
    wall = time.time()
    run(["docker", "exec", gw, "bash", "-c", f"echo garbage > {path} && kill -TERM 1"], check=False)
    # Stopped, or already restarted by Docker: either way `docker start` then finds it as it should.
    wait_for("the gateway to stop", 15, lambda: time.time() - wall > 3
             or run(["docker", "inspect", "-f", "{{.State.Running}}", gw]) == "false", interval=0.2)
    run(["docker", "start", gw], check=False)

    def warned():
        res = subprocess.run(["docker", "logs", "--since", f"{wall:.3f}", gw], capture_output=True, text=True, timeout=30)
        return next((x for x in (res.stdout + res.stderr).splitlines() if "ignoring the state file" in x), None)

    try:
        line = wait_for("the warning about the corrupt state file", 20, warned, interval=0.5)
        r.check("cold start: a corrupt state file is ignored with a warning", True, line.split("WARN", 1)[-1].strip()[:200])
    except AssertionError as e:
        r.check("cold start: a corrupt state file is ignored with a warning", False, str(e))
    try:
        wait_routed(stack, want, 30)
        wait_for("/readyz 200", 30, lambda: http_get(stack.admin("/readyz"))[0] == 200)
        wait_for("the state file rewritten", 20, lambda: state_file_holds(stack, gw, path, want), interval=0.5)
        r.check("cold start: after a corrupt file it starts, converges and rewrites the file", True)
    except AssertionError as e:
        r.check("cold start: after a corrupt file it starts, converges and rewrites the file", False, str(e))


def main():
    r = Results()
    stack = Stack(prefix="cgwfault", env={
        "GATEWAY_CONSISTENCY": os.environ.get("GATEWAY_CONSISTENCY", "stale"),
        "GATEWAY_STATE_FILE": os.environ.get("GATEWAY_STATE_FILE", "/tmp/gateway.state"),
    })
    log(f"project {stack.project}; gateway 127.0.0.1:{stack.gateway_port}, admin {stack.admin_port}, "
        f"consul subnet {stack.env['CONSUL_SUBNET']}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.monotonic()
    try:
        stack.c("up", "-d", "--scale", "serviceweb=3", timeout=600)
        wait_for("gateway /readyz to answer 200", 180, lambda: http_get(stack.admin("/readyz"))[0] == 200)
        three = wait_for("3 running backends", 60, lambda: (b := running_ips(stack)) and len(b) == 3 and b)
        wait_routed(stack, three)
        subnets = default_subnet(stack)
        r.check("the stack settles", True, f"{time.monotonic() - t_start:.1f} s")
        for name, f in [("partition", lambda: partition(stack, r)),
                        ("quorum loss", lambda: quorum_loss(stack, r, subnets)),
                        ("registrator", lambda: registrator_scale_down(stack, r, subnets)),
                        ("whole-cluster restart", lambda: cluster_restart(stack, r, subnets)),
                        ("cold start", lambda: cold_start(stack, r))]:
            log(f"--- {name}")
            t, wall = time.monotonic(), time.time()
            f()
            log(f"--- {name}: {time.monotonic() - t:.0f} s; the gateway's service-web changes: {transitions(stack, wall)}")
    except Exception as e:  # noqa: BLE001 - any failure is reported, then cleaned up
        r.check("scenario", False, f"{type(e).__name__}: {e}")
        for svc in ("gateway", "registrator", "consul-agent"):
            tail = stack.c("logs", "--no-color", "--tail", "30", svc, check=False)
            log(f"last {svc} logs:\n{tail}")
    finally:
        if os.environ.get("E2E_KEEP") and r.failed:
            log(f"E2E_KEEP set: leaving project {stack.project} up")
        else:
            stack.down()
            left = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}"],
                       check=False)
            r.check("down -v leaves no containers", not left, left)
    log(f"total {time.monotonic() - t_start:.0f} s")
    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
