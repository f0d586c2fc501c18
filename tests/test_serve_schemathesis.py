"""Schemathesis generates requests from the OpenAPI document (valid and invalid) against the real app: none may
get a server error. The server's limits are small so that each generated explanation takes little time."""

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from sagenano.loading import load_model
from sagenano.serve import ServerSettings, create_app

STORE = Path(tempfile.mkdtemp(prefix="sagenano-schemathesis-")) / "reports.sqlite3"
APP = create_app(load_model(), ServerSettings(store=STORE, max_new_tokens=24, max_question_chars=300))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case):
    response = case.call_and_validate(checks=[not_a_server_error])  # raises with a reproducing curl on a 5xx
    assert response.status_code < 500, response.text
