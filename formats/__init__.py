"""File formats and replay: the trace format (ops and decision lines), fleet files, and
the one dispatcher that turns an op into a :class:`usher.Scheduler` call.

See docs/TRACE_FORMAT.md.
"""
