"""Processes the harness starts, and what /proc says about them.

Every process is started in its own session (so its process group holds it and its children,
e.g. the gateway's watcher or nginx's worker) and is recorded in a pid file, so that both
`Procs.stop_all()` and the shell trap in run.sh can end exactly what this run started.
"""

import os
import random
import signal
import socket
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class HarnessError(Exception):
    """The harness itself could not do its job (a process did not start, a tool is missing)."""


class Proc:
    """One started process; for captured ones, every output line with the monotonic time it arrived."""

    def __init__(self, name, popen, log_path):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self.lines = []  # (monotonic seconds, line) for captured processes
        self.reader = None

    def alive(self):
        return self.popen.poll() is None

    def lines_since(self, t0, needle):
        """(time, line) of the first captured line at or after t0 containing needle, or None.
        Reads back from the newest line only as far as t0, so polling it stays cheap with many lines."""
        found = None
        i = len(self.lines)
        while i > 0:
            i -= 1
            t, line = self.lines[i]
            if t < t0:
                break
            if needle in line:
                found = (t, line)
        return found

    def count_since(self, start, needle):
        """(lines from index start on that contain needle, their latest time or None, next start)."""
        end = len(self.lines)
        n, last = 0, None
        for t, line in self.lines[start:end]:
            if needle in line:
                n, last = n + 1, t
        return n, last, end


class Procs:
    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.procs = []
        self.pidfile = os.path.join(run_dir, "pgids")

    def start(self, name, argv, cpus=None, capture=False, env=None):
        """Starts argv (under `taskset -c cpus` if cpus); capture=True keeps timestamped output lines."""
        if cpus:
            argv = ["taskset", "-c", cpus] + list(argv)  # taskset execs: the pid is the program's
        log_path = os.path.join(self.run_dir, f"{name}.log")
        log = open(log_path, "wb")
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        except OSError as e:
            log.close()
            raise HarnessError(f"cannot start {name} ({argv[0]}): {e}") from e
        proc = Proc(name, popen, log_path)
        if capture:
            proc.reader = threading.Thread(target=_pump, args=(popen.stdout, log, proc.lines), daemon=True)
            proc.reader.start()
        else:
            log.close()
        self.procs.append(proc)
        self._write_pidfile()
        return proc

    def stop(self, proc, sig=signal.SIGTERM, grace=5.0):
        """Signals the process group, waits up to grace seconds, then SIGKILLs the group."""
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(proc.pid, s)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children (a watcher, an nginx worker) may outlive the leader for a moment.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.reader:
            proc.reader.join(timeout=2)
        if proc in self.procs:
            self.procs.remove(proc)
        self._write_pidfile()

    def _write_pidfile(self):
        # Only groups still running stay listed, so run.sh's backstop never signals a reused pid.
        with open(self.pidfile, "w") as f:
            f.write("".join(f"{p.pid}\n" for p in self.procs))

    def stop_all(self):
        for proc in reversed(list(self.procs)):
            self.stop(proc, grace=3.0)


def _pump(stream, log, lines):
    with log:
        for raw in iter(stream.readline, b""):
            lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip("\n")))
            log.write(raw)
            log.flush()


# ---- ports ----

_taken = set()


def free_port():
    """A random port below the ephemeral range (so no outgoing connection can take it meanwhile)
    that is free on 127.0.0.1 right now."""
    for _ in range(1000):
        port = random.randint(20000, 32000)
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise HarnessError("no free port found")


def wait_until(pred, timeout, interval=0.02):
    """Polls pred() until it returns a truthy value (returned) or timeout passes (returns None)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# ---- /proc ----

def descendants(root):
    """root and every live descendant pid."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pid):
    """utime + stime of one process (all its threads), in clock ticks; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return 0
    fields = st[st.rfind(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def tree_cpu_ticks(root):
    """{pid: ticks} for root and its descendants."""
    return {p: cpu_ticks(p) for p in descendants(root)}


def tree_sched_ns(root):
    """{(pid, tid): ns on CPU} from /proc/<pid>/task/<tid>/schedstat (the scheduler's exact run time,
    unlike the tick-sampled utime+stime) for root's tree."""
    out = {}
    for p in descendants(root):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    out[(p, t)] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return out


def sched_seconds_between(before, after):
    return sum(v - before.get(k, 0) for k, v in after.items()) / 1e9


def cpu_seconds_between(before, after):
    """CPU seconds used between two tree_cpu_ticks snapshots (pids that appeared count from 0)."""
    ticks = sum(t - before.get(p, 0) for p, t in after.items())
    return ticks / CLK_TCK


def proc_field(pid, name, key):
    """The number after `key:` in /proc/<pid>/<name> (status, io), or 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def status_kb(pid, key):
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM), or 0 if the process is gone."""
    return proc_field(pid, "status", key)


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


class RssSampler:
    """Samples VmRSS of every process of a tree every `interval` seconds, keeping each one's max."""

    def __init__(self, root, interval=0.1):
        self.root = root
        self.interval = interval
        self.max_kb = {}  # comm -> max kB (summed over processes with that name at one instant)
        self.max_total_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self):
        per, total = {}, 0
        for p in descendants(self.root):
            kb = status_kb(p, "VmRSS")
            per[comm(p)] = per.get(comm(p), 0) + kb
            total += kb
        for k, v in per.items():
            self.max_kb[k] = max(self.max_kb.get(k, 0), v)
        self.max_total_kb = max(self.max_total_kb, total)


def tree_memory(root, key):
    """{comm: kB summed over processes with that name} for key VmRSS or VmHWM."""
    out = {}
    for p in descendants(root):
        out[comm(p)] = out.get(comm(p), 0) + status_kb(p, key)
    return out


def consul_connections(root, consul_port):
    """Established TCP connections from root's process tree to 127.0.0.1:consul_port, per comm."""
    inodes = set()
    for line in _read_lines("/proc/net/tcp") + _read_lines("/proc/net/tcp6"):
        f = line.split()
        if len(f) < 10 or f[3] != "01":  # 01 = ESTABLISHED
            continue
        rport = int(f[2].rsplit(":", 1)[1], 16)
        if rport == consul_port:
            inodes.add(f[9])
    out = {}
    for p in descendants(root):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        n = 0
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                n += 1
        if n:
            out[comm(p)] = out.get(comm(p), 0) + n
    return out


def bytes_sent_from(port, peer_ip="127.0.0.1"):
    """{(local, peer): bytes_sent} of the established TCP connections from local port `port` to
    `peer_ip` (tcp_info, through `ss -tin`); {} if ss is missing."""
    try:
        out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} and dst {peer_ip} )"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    res, key = {}, None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            f = line.split()
            key = (f[-2], f[-1]) if len(f) >= 2 else None
            continue
        for part in line.split():
            if part.startswith("bytes_sent:") and key:
                res[key] = int(part.split(":", 1)[1])
    return res


def _read_lines(path):
    try:
        with open(path) as f:
            return f.readlines()[1:]
    except OSError:
        return []


def machine_busy_seconds():
    """CPU-seconds all CPUs spent busy (not idle/iowait) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def wait_quiet(max_wait, threshold=15.0, log=print):
    """Waits (up to max_wait s) for a 3 s window in which the machine is less than threshold % busy."""
    start = time.monotonic()
    deadline, said = start + max_wait, None
    while True:
        busy = machine_busy_percent(3.0 if max_wait > 0 else 1.0)
        if busy < threshold:
            if said is not None:
                log(f"machine {busy:.0f}% busy after waiting {time.monotonic() - start:.0f} s; going ahead")
            return busy
        if time.monotonic() >= deadline:
            log(f"machine still {busy:.0f}% busy (wait budget used up); going ahead")
            return busy
        if said is None or time.monotonic() - said >= 30:
            log(f"machine {busy:.0f}% busy; waiting for a quieter moment (≤ {deadline - time.monotonic():.0f} s)")
            said = time.monotonic()


def machine_busy_percent(seconds=1.0):
    """Share of all CPUs busy (not idle/iowait) over a short sample, from /proc/stat."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = read()
    time.sleep(seconds)
    t1, i1 = read()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))
