"""The network service around the engine (``usher serve``): its home in the package
layout. Nothing is served yet; the engine is embedded through :class:`usher.Scheduler`.
"""
