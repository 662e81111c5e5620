"""Shared test configuration.

- Hypothesis profiles: ``default`` (fast, for CI) and ``thorough`` (long runs),
  chosen with the environment variable ``USHER_TEST_PROFILE``.
- The ``backend`` fixture: every rule test runs against both the engine
  (``usher.Scheduler``) and the plain-Python oracle (``tests/reference.py``).
  If ``usher`` cannot be imported the engine's tests FAIL (they are never
  skipped): a broken build must not look like a green run.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("USHER_TEST_PROFILE", "default"))

try:
    import usher

    _USHER_IMPORT_ERROR = None
except Exception as exc:  # noqa: BLE001 - reported by every test that needs it
    usher = None
    _USHER_IMPORT_ERROR = exc


def engine_class():
    """``usher.Scheduler``; fails the calling test when usher cannot be imported."""
    if _USHER_IMPORT_ERROR is not None:
        pytest.fail(f"usher cannot be imported: {_USHER_IMPORT_ERROR!r}", pytrace=False)
    return usher.Scheduler


def reference_class():
    """The reference scheduler of tests/reference.py."""
    if _USHER_IMPORT_ERROR is not None:  # the reference uses usher's enums and errors
        pytest.fail(f"usher cannot be imported: {_USHER_IMPORT_ERROR!r}", pytrace=False)
    from reference import ReferenceScheduler

    return ReferenceScheduler


BACKENDS = {"engine": engine_class, "reference": reference_class}


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def backend(request):
    """The scheduler class under test: ``usher.Scheduler`` or ``ReferenceScheduler``."""
    return BACKENDS[request.param]()
