"""How ``usher serve`` runs uvicorn: :func:`serve`.

- uvloop and httptools (the ``service`` extra installs both), no access log, no lifespan,
  no proxy-header middleware;
- the GIL's switch interval shortened to :data:`SWITCH_INTERVAL` for the process: the
  journal's flusher thread (and the decision log's writer) need the GIL briefly after
  each fsync, and with CPython's default interval (5 ms) a busy event loop keeps them,
  and with them every request of the group, waiting up to that long;
- the answers of one turn of the event loop written with one ``write`` per connection
  (:class:`CoalescingHttpToolsProtocol`);
- the heap settled before serving (:func:`settle_heap`): what exists once the state is
  recovered and the app built (the engine, its compiled kernels, the libraries) is
  moved out of the garbage collector's reach with ``gc.freeze()``. Otherwise every full
  collection, which CPython starts on its own as requests allocate, walks those
  objects again: a pause of tens of milliseconds on the event loop, and the requests
  that arrive during it wait it out (the p99 of a paced load).

Design of the coalescing: uvicorn writes an answer's head and its body with two
``write`` calls; on loopback each is a segment that wakes the client, which then reads
twice. Here the
connection's transport is wrapped (:class:`CoalescingTransport`) so that what is
written during one turn of the event loop (the head and body of an answer, and the
answers of requests that the same group commit released) goes out with one ``write``
at the end of the turn. Nothing waits longer than that turn.
"""

from __future__ import annotations

import gc
import sys

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingTransport", "CoalescingHttpToolsProtocol", "uvicorn_options", "serve", "settle_heap",
           "SWITCH_INTERVAL"]

SWITCH_INTERVAL = 0.0005  # seconds: sys.setswitchinterval of a serving process (CPython's default: 0.005)


class CoalescingTransport:
    """A transport whose writes of one turn of the event loop are sent as one
    (every other attribute is the wrapped transport's)."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport, loop):
        self._transport = transport
        self._loop = loop
        self._pending: list | None = None

    def write(self, data) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport`."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]


def uvicorn_options() -> dict:
    """The options ``usher serve`` gives ``uvicorn.run``: the coalescing httptools
    protocol, uvloop where it is installed, no access log, no lifespan, no proxy-header
    rewriting (the service reads no client address) and no ``server`` header."""
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - Windows
        loop = "asyncio"
    return dict(http=CoalescingHttpToolsProtocol, loop=loop, access_log=False, lifespan="off", log_level="warning",
                proxy_headers=False, server_header=False)


def settle_heap() -> None:
    """Collect garbage once, then freeze what is left (``gc.freeze``): the objects
    alive before serving are never walked by a collection again. Call it once the
    state is loaded and the app built, just before serving."""
    import uvicorn  # noqa: F401 - imported here so that its modules are frozen too
    import uvicorn.protocols.http.httptools_impl  # noqa: F401

    gc.collect()
    gc.freeze()


def serve(app, host: str, port: int, **options) -> None:
    """Run ``app`` on uvicorn at ``host:port`` until stopped (a signal), with
    :func:`uvicorn_options` (overridden by ``options``), the process's switch
    interval set to :data:`SWITCH_INTERVAL` and the heap settled (:func:`settle_heap`)."""
    import uvicorn

    sys.setswitchinterval(SWITCH_INTERVAL)
    settle_heap()
    uvicorn.run(app, host=host, port=port, **{**uvicorn_options(), **options})
