#!/usr/bin/env python3
"""End-to-end test of the container user flow (driven by scripts/e2e-docker.sh).

Runs docker-compose.yml under a unique project name on this machine's Docker engine and checks what
a user would: the stack settles, the gateway balances over every instance, a killed instance is
dropped within 5 s without a single failed request, scaling adds instances, killing the Consul
leader does not stop routing, no registration outlives its container, and `down` leaves nothing.

Traffic goes only to 127.0.0.1 (ports published by this project); everything else is docker/compose
commands against this project's containers. Every wait has a deadline. Cleanup runs on any exit.

Env: COMPOSE (e.g. "docker compose"; default: `docker compose` if available, else docker-compose),
CONSUL_IMAGE, GATEWAY_IMAGE (set by e2e-docker.sh), E2E_KEEP=1 (leave the stack up on failure),
CONSUL_SUBNET (default: a free /24 in 10.213.0.0/16). The stack helpers are scripts/lib/compose_stack.py.
Prints one line per check and finally `N passed, N failed`.
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from compose_stack import (  # noqa: E402 - the shared module lives in scripts/lib
    SERVICE,
    Hammer,
    Results,
    Stack,
    bad,
    http_get,
    log,
    log_time,
    run,
    sample_ips,
    wait_for,
)


def step_up(stack, r):
    t0 = time.monotonic()
    stack.c("up", "-d", "--scale", "serviceweb=3", timeout=600)
    wait_for("gateway /readyz to answer 200", 180, lambda: http_get(stack.admin("/readyz"))[0] == 200)
    backends = wait_for("3 running backends", 60, lambda: (b := stack.running_backends()) and len(b) == 3 and b)

    def settled():
        ids, _ = sample_ips(stack, 15)
        return ids == set(backends.values())

    wait_for("the gateway to route to all 3 backends", 60, settled, interval=0.5)

    def all_healthy():
        for cid in run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={stack.project}"]).split():
            health = run(["docker", "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", cid])
            if health not in ("", "healthy"):
                return False
        return True

    wait_for("every container with a healthcheck to be healthy", 60, all_healthy)
    r.check("up -d --scale serviceweb=3 settles", True, f"{time.monotonic() - t0:.1f}s")
    return backends


def step_balance(stack, r, backends, n):
    ips, failures = sample_ips(stack, 60)
    want = set(backends.values())
    r.check(f"60 requests reach all {n} instances", ips == want and not failures,
            f"seen {sorted(ips)}, running {sorted(want)}, failures {failures[:3]}")


def step_routes_from_tags(stack, r, backends):
    """The gateway has no --services: serviceweb opts in with its `gateway` tag, and the second
    demo service (`hello`) is routed by the host its `urlprefix-hello.localhost/` tag declares."""
    hello = wait_for("the hello container", 60, lambda: (h := stack.running_backends("hello")) and h)
    hello_ips = set(hello.values())
    status, body = http_get(stack.admin("/routes"))
    routes = {x["route"]: x["service"] for x in json.loads(body)["routes"]} if status == 200 else {}
    r.check("/routes lists the tag-declared routes",
            routes.get(f"/{SERVICE}") == SERVICE and routes.get("hello.localhost/") == "hello", f"{status} {routes}")

    def by_host():
        st, b = http_get(stack.url("/getRemoteIp"), headers={"Host": "hello.localhost"})
        return st == 200 and json.loads(b)["ip"] in hello_ips

    wait_for("hello to be routable by host (its check passing)", 60, by_host, interval=0.5)
    ok = all(by_host() for _ in range(10))
    r.check("Host: hello.localhost reaches the hello service", ok)
    status, _ = http_get(stack.url("/getRemoteIp"))
    r.check("without that host, /getRemoteIp has no route (404)", status == 404, f"got {status}")
    ips, _ = sample_ips(stack, 10)
    r.check("/service-web/* never reaches hello", not (ips & hello_ips) and ips <= set(backends.values()), f"{ips}")


def step_kill_instance(stack, r, backends, label):
    victim, victim_ip = sorted(backends.items())[0]
    logs_before = len(stack.gateway_logs().splitlines())
    hammer = Hammer(stack)
    hammer.start()
    time.sleep(1)
    t_kill, wall_kill = time.monotonic(), time.time()
    run(["docker", "kill", victim])
    needle = f"removed {victim_ip}:3000"

    def removal_logged():
        lines = stack.gateway_logs().splitlines()[logs_before:]
        return next((line for line in lines if needle in line), None)

    try:
        line = wait_for(f"the gateway to log '{needle}'", 15, removal_logged, interval=0.1)
        t_logged = time.monotonic()
    except AssertionError as e:
        hammer.finish()
        r.check(f"{label}: gateway logs the removal within 5s", False, str(e))
        return
    time.sleep(3)
    samples = hammer.finish()
    # The gateway's own timestamp says when it noticed; polling `compose logs` adds its own delay.
    logged_at = log_time(line)
    took = logged_at - wall_kill if logged_at else t_logged - t_kill
    r.check(f"{label}: gateway logs the removal within 5s", took <= 5,
            f"{took:.2f}s after docker kill: {line.strip()[-120:]}")
    # A request sent after the removal was logged must never reach the killed instance.
    late = [s for s in samples if s[0] > t_logged and s[2] == victim_ip]
    r.check(f"{label}: no response from the killed instance after its removal", not late,
            f"{len(late)} late responses")
    failures = bad(samples)
    r.check(f"{label}: the hammering client saw no errors", not failures and len(samples) > 20,
            f"{len(samples)} requests, failures {failures[:5]}")
    return victim_ip


def step_scale(stack, r, n):
    stack.c("up", "-d", "--scale", f"serviceweb={n}", "--no-recreate", timeout=300)
    backends = wait_for(f"{n} running backends", 60, lambda: (b := stack.running_backends()) and len(b) == n and b)

    def settled():
        ips, _ = sample_ips(stack, 25)
        return ips == set(backends.values())

    wait_for(f"the gateway to route to all {n} backends", 60, settled, interval=0.5)
    step_balance(stack, r, backends, n)
    return backends


def step_kill_leader(stack, r):
    leader = wait_for("a Raft leader", 30, stack.raft_leader)
    hammer = Hammer(stack)
    hammer.start()
    time.sleep(1)
    run(["docker", "kill", stack.containers(leader)[0]])
    t0 = time.monotonic()
    new = wait_for("a new leader", 60, lambda: (lead := stack.raft_leader()) and lead != leader and lead, interval=0.5)
    took = time.monotonic() - t0
    time.sleep(3)
    samples = hammer.finish()
    r.check("killing the Consul leader: the cluster re-elects", True, f"{leader} -> {new} in {took:.1f}s")
    failures = bad(samples)
    r.check("killing the Consul leader: routing continues without errors", not failures and len(samples) > 20,
            f"{len(samples)} requests, failures {failures[:5]}")


def registrations(stack):
    services = stack.agent_api("/v1/agent/services")
    return {sid: s for sid, s in services.items() if (s.get("Meta") or {}).get("registrator-container")}


def dead(registrations_by_id):
    out = set()
    for sid, s in registrations_by_id.items():
        cid = s["Meta"]["registrator-container"]
        if run(["docker", "inspect", "-f", "{{.State.Running}}", cid], check=False) != "true":
            out.add(sid)
    return out


def step_no_stale(stack, r):
    ours = registrations(stack)
    running = stack.running_backends()
    # The registrator also registers other containers of this engine (other tests may come and go):
    # a registration is stale only if its container is still not running a few seconds later.
    stale = dead(ours)
    if stale:
        time.sleep(3)
        stale &= set(registrations(stack))
        stale &= dead({sid: ours[sid] for sid in stale})
    stale = sorted(stale)
    registered = {s["Meta"]["registrator-container"] for s in ours.values() if s["Service"] == SERVICE}
    missing = [cid[:12] for cid in running if cid not in registered]
    r.check("no registration of a dead container, none missing", not stale and not missing,
            f"{len(ours)} registrations; stale {stale}, missing {missing}")


def step_down(stack, r):
    stack.c("down", "-v", "--remove-orphans", "-t", "5", timeout=300)
    label = f"label=com.docker.compose.project={stack.project}"
    left = {
        "containers": run(["docker", "ps", "-aq", "--filter", label]),
        "networks": run(["docker", "network", "ls", "-q", "--filter", label]),
        "volumes": run(["docker", "volume", "ls", "-q", "--filter", label]),
    }
    left = {k: v.split() for k, v in left.items() if v}
    r.check("down leaves no containers, networks or volumes", not left, f"left: {left}")


def main():
    r = Results()
    stack = Stack()
    log(f"compose: {' '.join(stack.compose)}; project {stack.project}; gateway 127.0.0.1:{stack.gateway_port}")
    log(f"images: CONSUL_IMAGE={os.environ.get('CONSUL_IMAGE', '(default)')} "
        f"GATEWAY_IMAGE={os.environ.get('GATEWAY_IMAGE', '(default)')}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    downed = False
    t_start = time.monotonic()
    try:
        backends = step_up(stack, r)
        step_balance(stack, r, backends, 3)
        step_routes_from_tags(stack, r, backends)
        step_kill_instance(stack, r, backends, "docker kill of one instance")
        backends = step_scale(stack, r, 5)
        step_kill_leader(stack, r)
        # Discovery still works through the new leader: another kill is noticed just as fast.
        step_kill_instance(stack, r, backends, "after re-election, killing another instance")
        step_no_stale(stack, r)
        step_down(stack, r)
        downed = True
    except Exception as e:  # noqa: BLE001 - any failure is reported, then cleaned up
        r.check("scenario", False, f"{type(e).__name__}: {e}")
        for svc in ("gateway", "registrator"):
            tail = stack.c("logs", "--no-color", "--tail", "30", svc, check=False)
            log(f"last {svc} logs:\n{tail}")
    finally:
        if not downed:
            if os.environ.get("E2E_KEEP") and r.failed:
                log(f"E2E_KEEP set: leaving project {stack.project} up")
            else:
                stack.down()
    log(f"total {time.monotonic() - t_start:.0f}s")
    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
