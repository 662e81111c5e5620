"""The simulated hospital day: scenario, demand draw, the day's event loop and its
handlers, the books, statistics kernels, metric sinks and the report.

See docs/SCENARIOS.md.
"""
