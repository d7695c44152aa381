"""What gRPC itself costs on this host: the floor under the engine's per-task figures.

    .venv/bin/python tests/bench/grpc_floor.py [--calls N] [--server aio|sync|grpclib]
                                               [--boundary] [--database-url URL]

Starts a grpc.aio server in a separate process with two handlers that do nothing (raw
bytes, no protobuf, no interceptor, no database) and measures from a grpc.aio client:

* sequential unary calls: the wall time of one call (the shape of an unloaded trigger, or of
  a worker's SendStepActionEvent) and the server's CPU per call;
* unary calls from 32 concurrent callers: the server's CPU per call under load (the shape of
  the completions of a busy worker);
* messages of one server stream (the shape of AssignedAction and of a result on
  SubscribeToWorkflowRuns): the server's CPU per message.

``--server sync`` measures grpcio's thread-pool server instead, for comparison, and
``--server grpclib`` the pure-Python grpclib server (asyncio and h2; ``pip install grpclib``,
it is not a dependency of Hewer); the client is grpc.aio in every case, as the SDKs are.
``--boundary`` puts the engine's own interceptor (api/grpc/boundary.py: the token check,
answered from its cache as on a busy engine, the decode and NUL checks) in front of the
grpc.aio handlers, to show what it adds per call. With
``--database-url`` it also times ``SELECT 1`` round trips over asyncpg, the other unit an
unloaded task is made of. Every figure is a median of three passes. See README.md, "The
gRPC floor".
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

SERVICE = "floor.Floor"
REPLY = b"r" * 200  # about an AssignedAction's size
CONCURRENT_CALLERS = 32
PASSES = 3


def _same(raw: bytes) -> bytes:
    return raw


def _handlers(unary: Any, stream: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=_same, response_serializer=_same
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=_same, response_serializer=_same
            ),
        },
    )


async def _serve_aio(port: int, ready: Any, interceptors: list[aio.ServerInterceptor]) -> None:
    async def unary(request: bytes, context: Any) -> bytes:
        return b"ok"

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for _ in range(int(request.decode())):
            yield REPLY

    server = aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((_handlers(unary, stream),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    ready.set()
    await server.wait_for_termination()


def _serve_sync(port: int, ready: Any) -> None:
    def unary(request: bytes, context: Any) -> bytes:
        return b"ok"

    def stream(request: bytes, context: Any) -> Iterator[bytes]:
        for _ in range(int(request.decode())):
            yield REPLY

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=CONCURRENT_CALLERS))
    server.add_generic_rpc_handlers((_handlers(unary, stream),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.set()
    server.wait_for_termination()


async def _serve_grpclib(port: int, ready: Any) -> None:
    from grpclib.const import Cardinality, Handler
    from grpclib.encoding.base import CodecBase
    from grpclib.server import Server, Stream

    class RawBytes(CodecBase):
        __content_subtype__ = "proto"

        def encode(self, message: bytes, message_type: Any) -> bytes:
            return message

        def decode(self, data: bytes, message_type: Any) -> bytes:
            return data

    async def unary(stream: Stream[bytes, bytes]) -> None:
        await stream.recv_message()
        await stream.send_message(b"ok")

    async def streamed(stream: Stream[bytes, bytes]) -> None:
        request = await stream.recv_message()
        for _ in range(int((request or b"0").decode())):
            await stream.send_message(REPLY)

    class Floor:
        def __mapping__(self) -> dict[str, Handler]:
            return {
                f"/{SERVICE}/Unary": Handler(unary, Cardinality.UNARY_UNARY, bytes, bytes),
                f"/{SERVICE}/Stream": Handler(streamed, Cardinality.UNARY_STREAM, bytes, bytes),
            }

    server = Server([Floor()], codec=RawBytes())
    await server.start("127.0.0.1", port)
    ready.set()
    await server.wait_closed()


def _boundary_interceptors() -> list[aio.ServerInterceptor]:
    from hewer.engine.api.grpc.boundary import BoundaryInterceptor
    from hewer.engine.services.auth import Identity

    class CachedToken:
        """Answers as the Authenticator does from its cache (no database)."""

        async def authenticate(self, header_value: str | None) -> Identity:
            return Identity(tenant_id="floor", token_id="floor")

    return [BoundaryInterceptor(CachedToken())]  # type: ignore[arg-type]


def _server_process(port: int, kind: str, boundary: bool, ready: Any) -> None:
    if kind == "sync":
        _serve_sync(port, ready)
    elif kind == "grpclib":
        asyncio.run(_serve_grpclib(port, ready))
    else:
        asyncio.run(_serve_aio(port, ready, _boundary_interceptors() if boundary else []))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc (clock ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Figure:
    name: str
    per_call_wall_us: list[float]
    per_call_cpu_us: list[float]

    def line(self) -> str:
        wall = statistics.median(self.per_call_wall_us)
        cpu = statistics.median(self.per_call_cpu_us)
        return f"  {self.name:<40} {wall:8.1f} us wall   {cpu:8.1f} us server CPU"


async def _measure(port: int, pid: int, calls: int) -> list[Figure]:
    sequential = Figure("unary, sequential (one call at a time)", [], [])
    concurrent = Figure(f"unary, {CONCURRENT_CALLERS} concurrent callers", [], [])
    streamed = Figure("server-streamed messages", [], [])
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary(
            f"/{SERVICE}/Unary", request_serializer=_same, response_deserializer=_same
        )
        stream = channel.unary_stream(
            f"/{SERVICE}/Stream", request_serializer=_same, response_deserializer=_same
        )
        await unary(b"warm-up")

        async def callers(count: int, each: int) -> None:
            async def caller() -> None:
                for _ in range(each):
                    await unary(REPLY)

            await asyncio.gather(*(caller() for _ in range(count)))

        async def read_stream(messages: int) -> None:
            async for _ in stream(str(messages).encode()):
                pass

        for _ in range(PASSES):
            for figure, count, run in (
                (sequential, calls, callers(1, calls)),
                (concurrent, calls * 4, callers(CONCURRENT_CALLERS, calls * 4 // 32)),
                (streamed, calls * 10, read_stream(calls * 10)),
            ):
                cpu0, wall0 = _cpu_seconds(pid), time.perf_counter()
                await run
                wall, cpu = time.perf_counter() - wall0, _cpu_seconds(pid) - cpu0
                figure.per_call_wall_us.append(1e6 * wall / count)
                figure.per_call_cpu_us.append(1e6 * cpu / count)
    return [sequential, concurrent, streamed]


async def _statement_round_trip(dsn: str, count: int) -> list[float]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.fetchval("SELECT 1")
        times: list[float] = []
        for _ in range(count):
            start = time.perf_counter()
            await conn.fetchval("SELECT 1")
            times.append(1e6 * (time.perf_counter() - start))
        return times
    finally:
        await conn.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="sequential calls per pass")
    parser.add_argument(
        "--server",
        choices=("aio", "sync", "grpclib"),
        default="aio",
        help="grpc.aio (the engine's), grpcio's thread-pool server, or grpclib",
    )
    parser.add_argument(
        "--boundary", action="store_true", help="the engine's interceptor in front (aio only)"
    )
    parser.add_argument("--database-url", metavar="URL", help="also time SELECT 1 round trips")
    args = parser.parse_args()
    if args.boundary and args.server != "aio":
        parser.error("--boundary measures the engine's interceptor on grpc.aio: use --server aio")

    port = _free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(
        target=_server_process, args=(port, args.server, args.boundary, ready)
    )
    server.start()
    try:
        if not ready.wait(30):
            raise SystemExit("the gRPC server did not start")
        assert server.pid is not None
        figures = asyncio.run(_measure(port, server.pid, args.calls))
    finally:
        server.terminate()
        server.join()
    kind = {
        "aio": f"grpc.aio server {grpc.__version__}",
        "sync": f"grpcio thread-pool server {grpc.__version__}",
        "grpclib": "grpclib server",
    }[args.server]
    if args.boundary:
        kind += " behind the engine's boundary interceptor"
    print(f"{kind}, no-op handlers, loopback, grpc.aio client, medians of {PASSES} passes")
    for figure in figures:
        print(figure.line())
    if args.database_url:
        times = asyncio.run(_statement_round_trip(args.database_url, args.calls))
        print(f"  {'asyncpg SELECT 1 round trip':<40} {statistics.median(times):8.1f} us wall")


if __name__ == "__main__":
    main()
