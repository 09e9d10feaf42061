"""The expansion port: gRPC's asyncio server, so a call costs a thread only once
its request has arrived.

gRPC's thread-pool server gives each call a thread *before* its request
message arrives. A client that opens calls and never sends (a slow loris)
parked one thread per call: 41 such calls on one connection locked every other
client out for as long as it liked (gRPC's own ``Concurrent RPC limit
exceeded!``). Here:

* a call waits for its request in the event loop, costing no thread, for at
  most ``--receive-timeout-secs``; then it is refused (``DEADLINE_EXCEEDED``);
* at most :data:`MAX_WAITING` calls wait for their request at once; one more
  refuses the call that has waited longest (``RESOURCE_EXHAUSTED``, "the
  service is busy"): a client sends its request as soon as it opens a call, so
  the calls waiting longest are the ones holding the port;
* one connection carries at most :data:`MAX_STREAMS` calls at once (HTTP/2's
  max concurrent streams: more wait in the client), and a connection that
  sends nothing for a while is closed;
* an arrived request is answered in a thread (:meth:`CrossinferExpansionServicer.answer`),
  where the admission lanes refuse at once what they have no room for, so
  gRPC's own limit on concurrent calls (set above all of these) is never the
  one that answers.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import OrderedDict
from concurrent import futures
from typing import Any

import grpc
from apache_beam.portability.api import beam_expansion_api_pb2

from crossinfer.expansion.admission import Busy, TimedOut
from crossinfer.expansion.limits import fixed

#: Calls held while their request arrives (see the module docstring).
MAX_WAITING = fixed("calls waiting for their request")
#: Calls in flight on one connection.
MAX_STREAMS = fixed("calls per connection")
#: A connection with no call for this long is closed (clients reconnect).
IDLE_CONNECTION_MS = 120_000

SERVICE = "org.apache.beam.model.expansion.v1.ExpansionService"


class Arrivals:
    """The calls waiting for their request message: at most ``limit``; when one
    more comes, the one that has waited longest is refused."""

    def __init__(self, limit: int = MAX_WAITING) -> None:
        self.limit = limit
        self._waiting: OrderedDict[int, asyncio.Future[None]] = OrderedDict()
        self._ids = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def receive(self, context: grpc.aio.ServicerContext, timeout: float) -> Any:
        """The call's request; Busy when it was pushed out, TimedOut after ``timeout``
        seconds, ValueError when the client closed without sending one."""
        loop = asyncio.get_running_loop()
        if len(self._waiting) >= self.limit:
            _, oldest = self._waiting.popitem(last=False)
            if not oldest.done():
                oldest.set_result(None)
        key, pushed = next(self._ids), loop.create_future()
        self._waiting[key] = pushed
        read = asyncio.ensure_future(context.read())
        try:
            done, _ = await asyncio.wait((read, pushed), timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting.pop(key, None)
            pushed.cancel()
        if read not in done:
            read.cancel()
            if pushed in done:
                raise Busy(f"the service is busy: {self.limit} calls were waiting for their "
                           "requests and this one had waited longest; retry later")
            raise TimedOut(f"the request did not arrive within {timeout:g} s of opening the "
                           "call (--receive-timeout-secs)")
        request = read.result()
        if request is grpc.aio.EOF:
            raise ValueError("the call ended without a request")
        return request


class ExpansionServer:
    """The service's gRPC server, on an event loop of its own thread.

    :meth:`bind` takes the port (OSError when it cannot); :meth:`start` then
    serves, handing each arrived request to ``answer(request, deadline)`` in a
    thread of ``threads`` (it may raise Busy / TimedOut). ``timeout_secs``
    bounds a request from the moment its call opens.
    """

    def __init__(self, *, address: str, threads: int, timeout_secs: float,
                 receive_timeout_secs: float, max_receive_bytes: int, max_send_bytes: int,
                 error_prefix: str, waiting: int = MAX_WAITING) -> None:
        self.address = address
        self._answer: Any = None
        self._timeout = timeout_secs
        self._receive_timeout = receive_timeout_secs
        self._prefix = error_prefix
        self._max_rpcs = waiting + threads + 16
        self.arrivals = Arrivals(waiting)
        self._executor = futures.ThreadPoolExecutor(max_workers=threads,
                                                    thread_name_prefix="expand")
        self._options = [
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", max_send_bytes),
            # gRPC sets SO_REUSEPORT by default: a second service on a busy port
            # would start and silently share it with the first.
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", MAX_STREAMS),
            ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
            # A connection gets as long for its HTTP/2 handshake as a call for its request.
            ("grpc.server_handshake_timeout_ms", int(receive_timeout_secs * 1000)),
        ]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="expansion-server", daemon=True)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    def bind(self) -> int:
        """Take the address's port (the one given, or a free one for port 0)."""
        self._thread.start()
        port: int = self._call(self._bind())
        return port

    def start(self, answer: Any) -> None:
        """Serve, answering arrived requests with ``answer``."""
        self._answer = answer
        assert self._server is not None, "bind() first"
        self._call(self._server.start())

    def stop(self, grace: float | None) -> None:
        """Stop accepting calls, give running ones ``grace`` seconds, then stop."""
        if self._server is not None and self._thread.is_alive():
            try:
                self._call(self._server.stop(grace), timeout=(grace or 0) + 5)
            except (futures.TimeoutError, RuntimeError):
                pass
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        # Expansions still running in threads are abandoned (they cannot be stopped).
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _call(self, coroutine: Any, timeout: float | None = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _bind(self) -> int:
        from crossinfer.expansion.worker_pool import bind_error

        server = grpc.aio.server(options=self._options, maximum_concurrent_rpcs=self._max_rpcs)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Expand": grpc.stream_unary_rpc_method_handler(
                self._expand,
                request_deserializer=beam_expansion_api_pb2.ExpansionRequest.FromString,
                response_serializer=beam_expansion_api_pb2.ExpansionResponse.SerializeToString),
        }),))
        try:
            port = server.add_insecure_port(self.address)
        except RuntimeError as exc:  # grpc raises RuntimeError when the bind fails
            raise bind_error(self.address) from exc
        if not port:
            raise bind_error(self.address)
        self._server, self.port = server, int(port)
        return self.port

    async def _expand(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        # Expand is unary; it is served as client-streaming only to read the one
        # request with a deadline (a unary handler gets it after an unbounded wait).
        del requests
        opened = time.monotonic()
        remaining = context.time_remaining()
        deadline = opened + min(self._timeout, remaining if remaining is not None
                                else self._timeout)
        try:
            request = await self.arrivals.receive(
                context, max(0.0, min(self._receive_timeout, deadline - opened)))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self._prefix}{exc}")
        except (Busy, TimedOut) as exc:
            await context.abort(status_of(exc), f"{self._prefix}{exc}")
        try:
            return await self._loop.run_in_executor(self._executor, self._answer, request,
                                                    deadline)
        except (Busy, TimedOut) as exc:
            await context.abort(status_of(exc), f"{self._prefix}{exc}")
        except RuntimeError as exc:  # the executor is shut down: the service is stopping
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self._prefix}{exc}")


def status_of(exc: Exception) -> grpc.StatusCode:
    """The gRPC status of a refusal for want of room (Busy) or time (TimedOut)."""
    return (grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(exc, Busy)
            else grpc.StatusCode.DEADLINE_EXCEEDED)
