"""``usher serve``: the scheduler as an HTTP service over a crash-safe journal.

``app.py`` is the ASGI app (Starlette): operations in the trace format in, decision lines
out, read-only views, health, ``/metrics``, the OpenAPI document; ``metrics.py`` the
Prometheus metrics (a registry the embedder chooses); ``decision_log.py`` the JSON
decision log. See docs/SERVICE.md.
"""
