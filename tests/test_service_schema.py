"""schemathesis against ``/openapi.json`` of the real ASGI app (in process): every
endpoint with generated inputs, valid and not; no answer is a 500 and every answer
matches the document (status, content type, schema). Examples per endpoint follow
the hypothesis profile (tests/conftest.py: ``default`` fast, ``thorough`` many)."""

from __future__ import annotations

import os

import schemathesis
from hypothesis import settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

import usher.journal as journal
from journal_workload import PRELUDE
from usher.service.app import create_app
from usher.service.dashboard import Dashboard
from usher.service.metrics import Metrics

EXAMPLES = 1000 if os.environ.get("USHER_TEST_PROFILE") == "thorough" else 40


def _app():
    j = journal.in_memory(clock=lambda: 0.0)
    j.apply(PRELUDE)
    metrics = Metrics(j)
    # an event stream answered for a moment, not for the page's 20 s
    return create_app(j, metrics=metrics, dashboard=Dashboard(j, stream_seconds=0.2))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=EXAMPLES)
def test_api_matches_its_openapi_document(case):
    # an operation valid in shape may still fail on the state (a server that is not
    # there, a time before the last one): a 422 error line, which the document declares
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
