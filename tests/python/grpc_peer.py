"""A real gRPC server and client (grpcio) for the gateway's end-to-end tests.

No protoc and no generated code: generic handlers with raw-bytes (identity) serializers, so a
message is just its bytes on the wire (inside gRPC's length-prefixed framing).

    grpc_peer.py server SERVICE    serves /SERVICE/{Unary,Stream,Fail,Slow} on 127.0.0.1, a free
                                   port, printed as `PORT <n>` on stdout; runs until stdin closes
    grpc_peer.py client TARGET SERVICE
                                   calls each method through TARGET (host:port, h2c with prior
                                   knowledge) and prints one JSON object with what it saw; last,
                                   Slow with a 10 s deadline ("late") and a method of a service
                                   nothing serves ("no_route")

Methods:
    Unary   (unary-unary)   answers b"echo:" + the request
    Stream  (unary-stream)  the request is a count n: n messages b"msg <i>", 300 ms apart
    Fail    (unary-unary)   aborts with PERMISSION_DENIED, details "no entry for <request>"
    Slow    (unary-unary)   answers after 3 s, or stops as soon as the call ends (cancelled,
                            or past its deadline)
    SlowEnded  (unary-unary)   b"yes" once a Slow call was seen ending early (waits up to 2 s)
    Remaining  (unary-unary)   the seconds left before the call's deadline (`grpc-timeout`),
                            b"none" without one
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc

STREAM_GAP = 0.3
SLOW = 3.0


def identity(b):
    return b


def serve(service):
    def unary(request, context):
        return b"echo:" + request

    def stream(request, context):
        for i in range(int(request)):
            if i:
                time.sleep(STREAM_GAP)
            yield b"msg %d" % i

    def fail(request, context):
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no entry for " + request.decode())

    ended = threading.Event()

    def slow(request, context):
        end = time.monotonic() + SLOW
        while time.monotonic() < end:
            if not context.is_active():
                ended.set()
                return b""
            time.sleep(0.02)
        return b"too late"

    def slow_ended(request, context):
        return b"yes" if ended.wait(2) else b"no"

    def remaining(request, context):
        left = context.time_remaining()
        return b"none" if left is None else b"%.2f" % left

    kw = dict(request_deserializer=identity, response_serializer=identity)
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, **kw),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, **kw),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, **kw),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, **kw),
        "SlowEnded": grpc.unary_unary_rpc_method_handler(slow_ended, **kw),
        "Remaining": grpc.unary_unary_rpc_method_handler(remaining, **kw),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT %d" % port, flush=True)
    # Until the test closes stdin (or dies, which closes it too).
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop(0)), daemon=True).start()
    server.wait_for_termination()


def client(target, service):
    out = {}
    with grpc.insecure_channel(target) as channel:
        def call(kind, method):
            return getattr(channel, kind)(
                "/%s/%s" % (service, method), request_serializer=identity, response_deserializer=identity
            )

        def status(e):
            return {"code": e.code().name, "details": e.details()}

        try:
            out["unary"] = call("unary_unary", "Unary")(b"hello", timeout=10).decode()
        except grpc.RpcError as e:
            out["unary_error"] = status(e)

        start = time.monotonic()
        got = []
        try:
            for m in call("unary_stream", "Stream")(b"4", timeout=20):
                got.append({"msg": m.decode(), "at": round(time.monotonic() - start, 3)})
        except grpc.RpcError as e:
            out["stream_error"] = status(e)
        out["stream"] = got

        try:
            call("unary_unary", "Fail")(b"mallory", timeout=10)
            out["fail"] = {"code": "OK"}
        except grpc.RpcError as e:
            out["fail"] = status(e)

        start = time.monotonic()
        try:
            call("unary_unary", "Slow")(b"x", timeout=0.5)
            out["slow"] = {"code": "OK"}
        except grpc.RpcError as e:
            out["slow"] = status(e)
        out["slow"]["elapsed"] = round(time.monotonic() - start, 3)
        out["slow"]["server_saw_end"] = call("unary_unary", "SlowEnded")(b"", timeout=10).decode()
        out["remaining"] = call("unary_unary", "Remaining")(b"", timeout=7).decode()

        # Answered after 3 s (headers and all), within a 10 s deadline.
        start = time.monotonic()
        try:
            out["late"] = {"reply": call("unary_unary", "Slow")(b"x", timeout=10).decode()}
        except grpc.RpcError as e:
            out["late"] = status(e)
        out["late"]["elapsed"] = round(time.monotonic() - start, 3)

        # A service no route leads to: the gateway's own answer.
        try:
            channel.unary_unary("/nope.Nothing/Call")(b"x", timeout=10)
            out["no_route"] = {"code": "OK"}
        except grpc.RpcError as e:
            out["no_route"] = status(e)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "server":
        serve(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
