#!/usr/bin/env python3
"""How many concurrent long polls one HTTP/2 connection to Consul's HTTPS API carries, and what
the server does with the stream after that (Python standard library only: a minimal HTTP/2
client written against RFC 9113 / RFC 7541, so that it can do what a real client refuses to:
open more streams than the server's SETTINGS_MAX_CONCURRENT_STREAMS).

    python3 bench/h2_streams.py --addr 127.0.0.1:8501 --cacert ca.pem --http 127.0.0.1:8500 [--streams 260]

It connects once (TLS, ALPN h2), reads the server's SETTINGS, acknowledges them (or not, with
--no-ack), then opens --streams blocking queries at once, each
`GET /v1/health/service/h2probe?index=<its current index>&wait=<wait>` (the same service on every
stream; each holds until its wait ends or the service changes). After --hold seconds it reports, per stream, whether it is
still held (a live long poll), answered, or reset (RST_STREAM and its error code). Then it
registers an instance of that service through --http (plain HTTP; a connection of its own), and
reports how many held streams answered within a few seconds: they were real long polls.

Traffic goes to the given loopback address only; the run is bounded by --hold + 10 s.
"""

import argparse
import http.client
import json
import socket
import ssl
import struct
import sys
import time

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
SETTING_NAMES = {1: "HEADER_TABLE_SIZE", 2: "ENABLE_PUSH", 3: "MAX_CONCURRENT_STREAMS", 4: "INITIAL_WINDOW_SIZE",
                 5: "MAX_FRAME_SIZE", 6: "MAX_HEADER_LIST_SIZE"}
ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               7: "REFUSED_STREAM", 8: "CANCEL", 11: "ENHANCE_YOUR_CALM"}


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v


class Conn:
    def __init__(self, addr, cacert, server_name):
        host, port = addr.rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=cacert)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection((host, int(port)), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_name or host)
        self.alpn = self.sock.selected_alpn_protocol()
        self.authority = addr
        self.buf = b""
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0)
                          + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 30))))

    def send(self, data):
        self.sock.sendall(data)

    def read_frame(self, timeout):
        """(type, flags, stream, payload), or None when nothing came within timeout."""
        self.sock.settimeout(timeout)
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return None
            if not chunk:
                raise EOFError("the server closed the connection")
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        kind, flags = self.buf[3], self.buf[4]
        stream = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
        payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
        return kind, flags, stream, payload

    def get(self, stream, path):
        block = b"".join(hpack_literal(k, v) for k, v in (
            (":method", "GET"), (":scheme", "https"), (":authority", self.authority), (":path", path)))
        self.send(frame(HEADERS, END_STREAM | END_HEADERS, stream, block))


def current_index(http_addr, path):
    host, port = http_addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    c.close()
    return int(r.getheader("X-Consul-Index"))


def put(http_addr, path, body):
    host, port = http_addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("PUT", path, body=json.dumps(body).encode())
    r = c.getresponse()
    r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError(f"PUT {path}: {r.status}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addr", required=True, help="Consul's HTTPS address, host:port")
    ap.add_argument("--cacert", required=True, help="PEM CA that signed Consul's certificate")
    ap.add_argument("--server-name", default="", help="name to verify the certificate against")
    ap.add_argument("--http", required=True, help="Consul's plain HTTP address, for the index and the change")
    ap.add_argument("--streams", type=int, default=260)
    ap.add_argument("--hold", type=float, default=3.0, help="seconds to wait before looking")
    ap.add_argument("--wait", default="60s", help="each blocking query's wait")
    ap.add_argument("--no-ack", action="store_true", help="never acknowledge the server's SETTINGS")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    o = ap.parse_args()

    c = Conn(o.addr, o.cacert, o.server_name)
    if c.alpn != "h2":
        print(f"the server did not negotiate h2 (ALPN: {c.alpn!r})", file=sys.stderr)
        return 2
    settings = {}
    deadline = time.monotonic() + 5
    while not settings and time.monotonic() < deadline:
        f = c.read_frame(1.0)
        if f and f[0] == SETTINGS and not f[1] & ACK:
            p = f[3]
            settings = {SETTING_NAMES.get(k, k): v for k, v in
                        (struct.unpack(">HI", p[i:i + 6]) for i in range(0, len(p), 6))}
            if not o.no_ack:
                c.send(frame(SETTINGS, ACK, 0))
    path = "/v1/health/service/h2probe"
    index = current_index(o.http, path)
    t0 = time.monotonic()
    for i in range(o.streams):
        c.get(2 * i + 1, f"{path}?index={index}&wait={o.wait}")
    state = {2 * i + 1: "held" for i in range(o.streams)}
    goaway = None

    def pump(until):
        nonlocal goaway
        while time.monotonic() < until:
            f = c.read_frame(max(0.01, until - time.monotonic()))
            if f is None:
                continue
            kind, flags, stream, payload = f
            if kind == RST_STREAM:
                code = struct.unpack(">I", payload)[0]
                state[stream] = f"reset {ERROR_NAMES.get(code, code)}"
            elif kind == HEADERS and stream in state and state[stream] == "held":
                state[stream] = "answered"
            elif kind == PING and not flags & ACK:
                c.send(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                goaway = ERROR_NAMES.get(struct.unpack(">I", payload[4:8])[0], "?")
                return

    pump(t0 + o.hold)
    before = dict(state)
    # Change the service: every held long poll on it answers.
    put(o.http, "/v1/agent/service/register", {"ID": "h2probe-change", "Name": "h2probe", "Port": 1})
    pump(time.monotonic() + 5)
    put(o.http, "/v1/agent/service/deregister/h2probe-change", {})

    def summary(s):
        out = {}
        for sid in sorted(s):
            out.setdefault(s[sid], []).append((sid + 1) // 2)  # the n-th stream opened
        return {k: (len(v), f"{v[0]}..{v[-1]}") for k, v in out.items()}

    result = {
        "alpn": c.alpn,
        "server_settings": settings,
        "settings_acked": not o.no_ack,
        "streams_opened": o.streams,
        f"after_{o.hold:g}s": summary(before),
        "held_then_answered_after_a_change": sum(1 for k, v in before.items() if v == "held" and state[k] == "answered"),
        "goaway": goaway,
    }
    if o.json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
