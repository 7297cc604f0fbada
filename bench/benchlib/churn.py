"""The churn soak's moving parts (bench/soak.py): a fleet of services whose instances are registered
and deregistered at a fixed rate through Consul's agent API (the operation log), the gateway's
change feed (`GET /events` on its admin listener) that timestamps when each change reached the
gateway, and a probe client that records every request's service, times and answer.

What a request should have got is judged afterwards against the operation log (`judge`)."""

import bisect
import http.client
import json
import random
import re
import socket
import threading
import time

from .load import Workers
from .procs import HarnessError


class Op:
    """One registration or deregistration: monotonic times of the call's start and return, and of
    the change event that showed it in the gateway (None: not seen)."""

    __slots__ = ("kind", "inst", "t_start", "t_return", "t_seen", "status")

    def __init__(self, kind, inst, t_start):
        self.kind, self.inst, self.t_start = kind, inst, t_start
        self.t_return = self.t_seen = None
        self.status = None

    def propagation(self):
        """Seconds from the call's return to the gateway's change event (None if not seen)."""
        if self.t_seen is None or self.t_return is None:
            return None
        return self.t_seen - self.t_return


class Instance:
    __slots__ = ("service", "port", "sid", "registered", "pending", "ops")

    def __init__(self, service, port):
        self.service, self.port = service, port
        self.sid = f"{service}-{port}"
        self.registered = False
        self.pending = None  # the Op not yet seen by the gateway
        self.ops = []


class Fleet:
    """`services` services (`soak-<i>`), each with `slots` instance slots (one backend port each).
    The last `volatile` services may lose all their instances; the others always keep one."""

    def __init__(self, n_services, slots, volatile, ports, ttl):
        if len(ports) != n_services * slots:
            raise ValueError("one port per instance slot")
        self.names = [f"soak-{i}" for i in range(n_services)]
        self.volatile = set(self.names[n_services - volatile:]) if volatile else set()
        self.by_service = {n: [Instance(n, ports[i * slots + k]) for k in range(slots)]
                           for i, n in enumerate(self.names)}
        self.by_port = {inst.port: inst for insts in self.by_service.values() for inst in insts}
        self.initial = {}  # service -> instances registered before the run
        self.ttl = ttl
        self.lock = threading.Lock()
        self.ops = []
        self.unexpected = []  # (t, "added"/"removed", port): a change the harness did not make

    def stable(self):
        return [n for n in self.names if n not in self.volatile]

    def register_body(self, inst):
        # The TTL check starts passing and outlives the run: the harness alone decides health, so
        # the operation log is the truth about which instances were healthy when.
        return {"ID": inst.sid, "Name": inst.service, "Address": "127.0.0.1", "Port": inst.port,
                "Check": {"CheckID": f"service:{inst.sid}", "Name": "soak TTL", "TTL": self.ttl,
                          "Status": "passing"}}

    def setup(self, consul, conn, rng, per_service):
        """Registers `per_service` instances of every service (before the gateway starts)."""
        for n, insts in self.by_service.items():
            for inst in rng.sample(insts, per_service):
                consul.must("PUT", "/v1/agent/service/register", self.register_body(inst), conn)
                inst.registered = True
            self.initial[n] = {i.port for i in insts if i.registered}

    def pick(self, rng, services, now, timeout):
        """The next operation among `services`: an instance with no change in flight, flipped
        (registered → deregistered, or back); a stable service keeps at least one instance. None
        if nothing is eligible. An instance whose last change was never seen for `timeout` s is
        eligible again (that change is reported as not seen)."""
        with self.lock:
            for inst in self._candidates(services, now, timeout, rng):
                if inst.registered:
                    left = sum(1 for i in self.by_service[inst.service] if i.registered)
                    if left <= 1 and inst.service not in self.volatile:
                        continue
                kind = "deregister" if inst.registered else "register"
                op = Op(kind, inst, time.monotonic())
                inst.registered = kind == "register"
                inst.pending = op
                inst.ops.append(op)
                self.ops.append(op)
                return op
        return None

    def _candidates(self, services, now, timeout, rng):
        out = []
        for n in services:
            for inst in self.by_service[n]:
                p = inst.pending
                if p is None or (p.t_return is not None and now - p.t_return > timeout):
                    out.append(inst)
        rng.shuffle(out)
        return out

    def seen(self, what, port, t):
        """The gateway's change feed said `what` ("added"/"removed") for 127.0.0.1:port at t."""
        with self.lock:
            inst = self.by_port.get(port)
            op = inst.pending if inst else None
            if op is None or op.kind != ("register" if what == "added" else "deregister"):
                self.unexpected.append((t, what, port))
                return
            op.t_seen = t
            inst.pending = None

    def expected(self):
        """{service: set of ports registered now}, from the operation log."""
        with self.lock:
            return {n: {i.port for i in insts if i.registered} for n, insts in self.by_service.items()}


def churn(fleet, consul, rate, threads, stop, timeout, seed=1):
    """Runs `threads` threads (each over its share of the services, at rate/threads operations per s)
    until `stop` is set; returns them started. A Consul error ends the thread and is kept in
    `fleet.errors`."""
    fleet.errors = []

    def run(k):
        rng = random.Random(seed + k)
        mine = fleet.names[k::threads]
        interval = threads / rate
        conn = consul.connection()
        t_next = time.monotonic()
        try:
            while not stop.is_set():
                t_next += interval
                op = fleet.pick(rng, mine, time.monotonic(), timeout)
                if op is not None:
                    inst = op.inst
                    if op.kind == "register":
                        st, body = consul.request("PUT", "/v1/agent/service/register", fleet.register_body(inst), conn)
                    else:
                        st, body = consul.request("PUT", f"/v1/agent/service/deregister/{inst.sid}", None, conn)
                    op.t_return, op.status = time.monotonic(), st
                    if st != 200:
                        raise HarnessError(f"consul {op.kind} {inst.sid}: {st} {body[:200]!r}")
                stop.wait(max(0.0, t_next - time.monotonic()))
        except (OSError, http.client.HTTPException, HarnessError) as e:
            fleet.errors.append(f"churn thread {k}: {e}")
        finally:
            conn.close()

    ts = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    return ts


_CHANGE = re.compile(r"(added|removed|changed) ([^,]+)")


class ChangeFeed:
    """Follows the gateway's `GET /events` (server-sent events) and hands every instance change to
    the fleet, timestamped on arrival (monotonic). Other events (the watcher or Consul changing
    state, services gone) are kept in `others`."""

    def __init__(self, admin_port, fleet):
        self.fleet = fleet
        self.conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=30)
        self.conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
        r = self.conn.getresponse()
        if r.status != 200:
            raise HarnessError(f"GET /events answered {r.status}")
        self.resp = r
        self.changes = 0
        self.states = 0
        self.others = []
        self.error = None
        self.closing = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def close(self):
        self.closing = True
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)  # ends the reader's readline; it closes the rest
        except (OSError, AttributeError):
            pass
        self.thread.join(timeout=5)

    def _run(self):
        name, data = None, []
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    if not self.closing:
                        self.error = "the gateway ended the stream"
                    return
                t = time.monotonic()
                line = line.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "":
                    if name == "change":
                        self._change(t, json.loads("\n".join(data)))
                    elif name == "state":
                        self.states += 1
                    name, data = None, []
        except (OSError, ValueError, AttributeError, http.client.HTTPException) as e:
            # AttributeError: http.client's chunked reader when close() shut the socket under it.
            if not self.closing:
                self.error = f"{type(e).__name__}: {e}"
        finally:
            self.conn.close()

    def _change(self, t, ev):
        self.changes += 1
        if ev.get("kind") != "instances":
            self.others.append((t, ev.get("kind"), ev.get("message", "")))
            return
        # "soak-3: 2 -> 1 instances, removed 127.0.0.1:20001" (gateway/src/discovery/set.rs, change_line)
        for what, addrs in _CHANGE.findall(ev.get("message", "")):
            for a in addrs.split():
                port = a.rsplit(":", 1)[-1]
                if what in ("added", "removed") and port.isdigit():
                    self.fleet.seen(what, int(port), t)


class Probe(Workers):
    """`threads` keep-alive clients sending GET /<service>/ in turn over `services`, `rate` requests/s
    in all; each request is kept as (service, sent, received, status or error name, port that answered)."""

    join_timeout = 10

    def __init__(self, port, services, rate, threads=4):
        self.port, self.services, self.threads = port, services, threads
        self.interval = threads / rate
        self.records = []
        self._workers(threads)

    def _run(self, k):
        conn, i = None, k
        t_next = time.monotonic()
        while not self._stop.is_set():
            svc = self.services[i % len(self.services)]
            i += self.threads
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            ts = time.monotonic()
            try:
                conn.request("GET", f"/{svc}/")
                r = conn.getresponse()
                body = r.read()
                port = None
                if r.status == 200:
                    try:
                        port = json.loads(body).get("port")
                    except ValueError:
                        pass
                self.records.append((svc, ts, time.monotonic(), r.status, port))
            except (OSError, http.client.HTTPException) as e:
                self.records.append((svc, ts, time.monotonic(), type(e).__name__, None))
                conn.close()
                conn = None
            t_next += self.interval
            self._stop.wait(max(0.0, t_next - time.monotonic()))
        if conn:
            conn.close()


# ---- judging the probe's requests against the operation log ----

INF = float("inf")


def _healthy_intervals(fleet, grace):
    """{service: [(from, to)]}: when the service had at least one healthy instance *as far as the
    gateway could know*: from the change event of the registration that gave it one (or the
    call's return + grace if that event never came) to the start of the deregistration call that
    took its last one away (the change can reach the gateway before the call returns)."""
    out = {}
    for n, insts in fleet.by_service.items():
        ops = sorted((op for i in insts for op in i.ops), key=lambda o: o.t_start)  # one thread per service
        count = len(fleet.initial[n])
        start = -INF if count else None
        iv = []
        for op in ops:
            if op.kind == "register":
                count += 1
                if count == 1:
                    start = op.t_seen if op.t_seen is not None else (op.t_return or op.t_start) + grace
            else:
                count -= 1
                if count == 0:
                    if start < op.t_start:
                        iv.append((start, op.t_start))
                    start = None
        if count:
            iv.append((start, INF))
        out[n] = iv
    return out


def _instance_intervals(fleet, grace):
    """{port: [(from, to)]}: when the gateway may route to the instance: from the start of its
    registration call to the change event of its deregistration (or the call's return + grace)."""
    out = {}
    for n, insts in fleet.by_service.items():
        for inst in insts:
            start = -INF if inst.port in fleet.initial[n] else None
            iv = []
            for op in inst.ops:
                if op.kind == "register":
                    start = op.t_start
                else:
                    iv.append((start, op.t_seen if op.t_seen is not None else (op.t_return or op.t_start) + grace))
                    start = None
            if start is not None:
                iv.append((start, INF))
            out[inst.port] = iv
    return out


def judge(fleet, records, grace):
    """Each probe request against the log. A request is *judged* if its service had a healthy
    instance (see `_healthy_intervals`) from its sending to its answer; a judged request that did
    not get a 200 from an instance of its service is an error. A 200 from an instance the gateway
    should not have used any more (`_instance_intervals`) is counted as stale, not as an error."""
    healthy = _healthy_intervals(fleet, grace)
    starts = {n: [a for a, _ in iv] for n, iv in healthy.items()}
    valid = _instance_intervals(fleet, grace)
    res = {"total": len(records), "judged": 0, "errors": {}, "error_examples": [], "unjudged": 0,
           "unjudged_status": {}, "misrouted": 0, "stale": 0, "stale_examples": []}
    for svc, ts, te, status, port in records:
        iv = healthy[svc]
        i = bisect.bisect_right(starts[svc], ts) - 1
        if i < 0 or te >= iv[i][1]:
            res["unjudged"] += 1
            res["unjudged_status"][status] = res["unjudged_status"].get(status, 0) + 1
            continue
        res["judged"] += 1
        inst = fleet.by_port.get(port)
        if status != 200 or inst is None or inst.service != svc:
            key = status if status != 200 else "200 from another service's instance"
            res["misrouted"] += status == 200
            res["errors"][key] = res["errors"].get(key, 0) + 1
            if len(res["error_examples"]) < 10:
                res["error_examples"].append((svc, ts, te, status, port))
            continue
        if not any(a <= te and b >= ts for a, b in valid[port]):
            res["stale"] += 1
            if len(res["stale_examples"]) < 10:
                res["stale_examples"].append((svc, ts, te, port))
    return res


def check_judge():
    """The judge against a made-up log whose answer is known (run before every soak, so a broken
    judge fails the harness instead of reporting 0 errors). Raises HarnessError."""
    f = Fleet(2, 2, 1, [1001, 1002, 2001, 2002], "1h")
    for n, p in (("soak-0", 1001), ("soak-1", 2001)):
        f.by_port[p].registered = True
        f.initial[n] = {p}
    for kind, port, t, seen in (("deregister", 2001, 10, 10.05), ("register", 2002, 20, 20.04),
                                ("register", 1002, 5, 5.03), ("deregister", 1001, 30, 30.05)):
        op = Op(kind, f.by_port[port], t)
        op.t_return, op.t_seen, op.status = t + 0.01, seen, 200
        f.by_port[port].ops.append(op)
    records = [("soak-0", 1, 1.01, 200, 1001),  # fine
               ("soak-0", 31, 31.01, 200, 1001),  # stale: 1001's removal was shown at 30.05
               ("soak-0", 32, 32.01, 503, None),  # error
               ("soak-0", 33, 33.01, 200, 2002),  # error: another service's instance
               ("soak-1", 12, 12.01, 503, None),  # not judged: soak-1 empty from 10 to 20.04
               ("soak-1", 20.02, 20.03, 503, None),  # not judged: before the gateway showed 2002
               ("soak-1", 21, 21.01, "ConnectionResetError", None),  # error
               ("soak-1", 9.99, 10.02, 200, 2001)]  # not judged: spans the start of the last deregistration
    r = judge(f, records, 1.0)
    got = (r["judged"], sum(r["errors"].values()), r["misrouted"], r["stale"], r["unjudged"])
    if got != (5, 3, 1, 1, 3):
        raise HarnessError(f"the soak's judge is broken: (judged, errors, misrouted, stale, unjudged) = {got}, "
                           "expected (5, 3, 1, 1, 3)")
