"""The cluster's ASGI gate in front of the service's endpoints (``create_app(role=...)``).

- ``POST`` on a standby: 503 ``{"error": "NotLeader", "field": "leader", "leader": URL,
  "message"}``, before the body is read (the client sends it to the leader).
- a ``POST`` whose records the leader could not append (deposed meanwhile, database
  lost): the same 503 instead of an answer; nothing it decided is acknowledged.
- every answer carries ``X-Usher-Position``: the journal records the state it reflects
  (a standby's reads lag the leader's by the rows not yet applied).
- ``GET /v1/cluster``: role, epoch, position, leader URL, this broker's URL
  (``?digest=true``: and the state's digest, ``usher.cluster.state_digest``).
"""

from __future__ import annotations

import msgspec

from usher.cluster.store import NotLeader

__all__ = ["ClusterGate"]

_ENCODER = msgspec.json.Encoder()


class ClusterGate:
    """ASGI middleware over ``app`` for ``broker`` (a :class:`usher.cluster.Broker`)."""

    def __init__(self, app, broker):
        self.app = app
        self.broker = broker
        self.journal = broker.journal

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/v1/cluster":
            digest = b"digest=true" in scope.get("query_string", b"")
            await self._answer(send, 200, self.broker.status(digest=digest))
            return
        if scope["method"] == "POST" and not self.journal.leading:
            await self._not_leader(send, None)
            return
        started = False

        async def send_with_position(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-usher-position", b"%d" % self.journal.seq)]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_position)
        except NotLeader as e:
            if started:
                raise
            await self._not_leader(send, str(e))

    async def _not_leader(self, send, why):
        leader = self.broker.leader if self.broker.leader != self.broker.url else None
        await self._answer(send, 503, {
            "error": "NotLeader", "field": "leader", "leader": leader,
            "message": why or "this broker is a standby: send writes to the leader"})

    async def _answer(self, send, status, body):
        data = _ENCODER.encode(body)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(data)),
            (b"x-usher-position", b"%d" % self.journal.seq)]})
        await send({"type": "http.response.body", "body": data})
