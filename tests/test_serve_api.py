"""The REST API on the shipped model, in process (FastAPI's TestClient drives the real app over ASGI)."""

import json
import re
import sqlite3
import threading

import pytest
from fastapi.testclient import TestClient

from sagenano.inverse import Report
from sagenano.loading import load_model
from sagenano.serve import ServerSettings, create_app
from sagenano.serve.store import ReportStore

EQUATION = "If 3x + 2 = 14, what is x?"
HESITANT = "Given 4x + 13 = 43, find x."  # the shipped pico hesitates at a token that changes its answer (x = 7.5)
SMALL = {"max_new_tokens": 48, "alternatives": 2, "max_decision_points": 2}


@pytest.fixture(scope="module")
def shipped():
    return load_model()


@pytest.fixture
def client(shipped, tmp_path):
    with TestClient(create_app(shipped, ServerSettings(store=tmp_path / "reports.sqlite3"))) as client:
        yield client


def _explain(client, question=EQUATION, **extra):
    response = client.post("/v1/explain", json={"question": question, **SMALL, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def _problem(response, status: int) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 10
    return detail


def test_explain_then_read_the_report_at_every_depth_and_download_it(client):
    body = _explain(client, depth="novice")
    report = Report.model_validate(body["report"])
    assert report.question == EQUATION and body["text"] == report.text("novice") == body["texts"]["novice"]
    assert len(set(body["texts"].values())) == 3
    for depth in ("novice", "intermediate", "expert"):
        again = client.get(f"/v1/reports/{body['id']}", params={"depth": depth}).json()
        assert again["text"] == body["texts"][depth] and again["report"] == body["report"]
    download = client.get(f"/v1/reports/{body['id']}/json")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    assert Report.from_json(download.text) == report


def test_compare_counterfactual_and_simplify(client):
    body = _explain(client, question=HESITANT)
    point = [*body["report"]["decision_points"], *body["report"]["hesitations"]][0]  # compare takes either
    compared = client.post("/v1/compare", json={"report_id": body["id"], "position": point["position"]})
    assert compared.status_code == 200, compared.text
    comparison = compared.json()["comparison"]
    assert comparison["chosen"]["token"] == point["token"]
    assert comparison["alternative"]["token_id"] == point["alternatives"][0]["token_id"]

    edited = HESITANT.replace("+ 13", "+ 16")
    diff = client.post("/v1/counterfactual", json={"report_id": body["id"], "question": edited})
    assert diff.status_code == 200, diff.text
    diff = diff.json()
    assert [(e["before"], e["after"]) for e in diff["counterfactual"]["edits"]] == [("13", "16")]
    assert client.get(f"/v1/reports/{diff['new_report_id']}").json()["report"]["question"] == edited

    simpler = client.post("/v1/simplify", json={"report_id": body["id"], "n": 2, "seed": 1})
    assert simpler.status_code == 200, simpler.text
    assert len(simpler.json()["simplification"]["candidates"]) == 2


def test_bad_requests_are_4xx_that_say_what_to_change(client):
    post = client.post
    malformed = post("/v1/explain", content=b'{"question": ', headers={"content-type": "application/json"})
    assert "not valid JSON" in _problem(malformed, 400)
    assert "at least 1 character" in _problem(post("/v1/explain", json={"question": ""}), 422)
    assert "no visible text" in _problem(post("/v1/explain", json={"question": "   \n"}), 422)
    assert "at most 4000" in _problem(post("/v1/explain", json={"question": "x" * 4001}), 422)
    assert "question" in _problem(post("/v1/explain", json={}), 422)
    assert "Extra inputs" in _problem(post("/v1/explain", json={"question": EQUATION, "colour": 1}), 422)
    assert "depth" in _problem(post("/v1/explain", json={"question": EQUATION, "depth": "child"}), 422)
    assert "less than or equal to 512" in _problem(post("/v1/explain", json={"question": EQUATION,
                                                                             "max_new_tokens": 513}), 422)  # fmt: skip
    assert "no report 'nope'" in _problem(client.get("/v1/reports/nope"), 404)
    assert "no report" in _problem(client.get("/v1/reports/nope/json"), 404)
    assert "no report" in _problem(post("/v1/compare", json={"report_id": "nope", "position": 0}), 404)
    assert "no report" in _problem(post("/v1/counterfactual", json={"report_id": "nope", "question": "q?"}), 404)
    assert "no report" in _problem(post("/v1/simplify", json={"report_id": "nope"}), 404)
    body = _explain(client)
    for n in (0, 17):
        assert "n" in _problem(post("/v1/simplify", json={"report_id": body["id"], "n": n}), 422)
    assert "temperature" in _problem(post("/v1/simplify", json={"report_id": body["id"], "temperature": 0}), 422)
    assert "no decision point at position 999" in _problem(
        post("/v1/compare", json={"report_id": body["id"], "position": 999}), 422
    )


@pytest.mark.parametrize(
    "field",
    [{"verify": 0}, {"max_new_tokens": "10"}, {"max_new_tokens": True}, {"max_new_tokens": 10.5}, {"rollouts": "yes"}],
)
def test_values_of_the_wrong_type_are_refused_not_coerced(client, field):
    (name,) = field
    assert name in _problem(client.post("/v1/explain", json={"question": EQUATION, **field}), 422)


def test_a_whole_number_written_with_a_point_is_an_integer_as_json_schema_says(client):
    assert "alternatives" in _problem(client.post("/v1/explain", json={"question": EQUATION, "alternatives": 2.5}), 422)
    whole = client.post("/v1/explain", json={"question": EQUATION, "alternatives": 2.0, "rollouts": False})
    assert whole.status_code == 200 and whole.json()["report"]["options"]["alternatives"] == 2


@pytest.mark.parametrize("question", ["\u0000", "\ufeff", "\u200b\u200b", "\r", " \u2060\t"])
def test_a_question_without_visible_text_is_refused_and_the_schema_says_so(client, question):
    assert "no visible text" in _problem(client.post("/v1/explain", json={"question": question}), 422)
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ExplainRequest"]["properties"]["question"]
    assert not re.search(schema["pattern"], question) and re.search(schema["pattern"], "Is 2 < 3?")


def test_a_body_over_the_limit_is_413_before_it_is_read(shipped):
    settings = ServerSettings(max_body_bytes=1000)
    with TestClient(create_app(shipped, settings)) as client:
        big = json.dumps({"question": "x" * 2000}).encode()
        declared = client.post("/v1/explain", content=big, headers={"content-type": "application/json"})
        assert "limit of 1,000 bytes" in _problem(declared, 413)

        def chunks():  # no Content-Length: counted as it arrives
            yield b'{"question": "'
            yield from [b"x" * 512] * 8
            yield b'"}'

        chunked = client.post("/v1/explain", content=chunks(), headers={"content-type": "application/json"})
        assert "limit of 1,000 bytes" in _problem(chunked, 413)
        assert client.get("/v1/model").json()["limits"]["max_body_bytes"] == 1000


def test_only_the_allowed_hosts_are_answered(shipped):
    from sagenano.serve.guard import LOOPBACK_HOSTS

    with TestClient(create_app(shipped, ServerSettings(allowed_hosts=LOOPBACK_HOSTS))) as client:
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert client.get("/healthz", headers={"host": host}).status_code == 200, host
        refused = client.get("/docs/", headers={"host": "evil.example"})  # was a redirect echoing the host
        assert "does not answer to the host 'evil.example'" in _problem(refused, 400)
        assert "evil" not in refused.headers.get("location", "")


def test_every_response_carries_the_security_headers(client):
    responses = [client.get("/"), client.get("/healthz"), client.get("/v1/reports/nope"),
                 client.post("/v1/explain", json={}), client.get("/static/app.js")]  # fmt: skip
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert "default-src 'self'" in response.headers["content-security-policy"], response.url
    assert "content-security-policy" not in client.get("/docs").headers  # its assets come from a CDN


def test_the_servers_own_limits_are_4xx(shipped, tmp_path):
    settings = ServerSettings(store=tmp_path / "r.sqlite3", max_question_chars=20, max_new_tokens=16)
    with TestClient(create_app(shipped, settings)) as client:
        assert "at most 20" in _problem(client.post("/v1/explain", json={"question": EQUATION}), 422)
        too_many = client.post("/v1/explain", json={"question": "2 + 2?", "max_new_tokens": 17})
        assert "allows at most 16" in _problem(too_many, 422)
        limits = client.get("/v1/model").json()["limits"]
        assert limits["max_question_chars"] == 20 and limits["max_new_tokens"] == 16
        # The published schema states this server's limits, and a request that leaves max_new_tokens out gets the
        # default within them (schemathesis: a schema-valid request must not be refused).
        fields = client.get("/openapi.json").json()["components"]["schemas"]["ExplainRequest"]["properties"]
        assert fields["question"]["maxLength"] == 20 and fields["max_new_tokens"]["maximum"] == 16
        defaulted = client.post("/v1/explain", json={"question": "2 + 2?", "rollouts": False, "verify": False})
        assert defaulted.status_code == 200 and defaulted.json()["report"]["options"]["max_new_tokens"] == 16


def test_a_full_queue_answers_503_with_retry_after(shipped, tmp_path):
    settings = ServerSettings(store=tmp_path / "r.sqlite3", max_pending=1)
    with TestClient(create_app(shipped, settings)) as client:
        release = threading.Event()
        blocking = client.app.state.worker.submit(lambda progress: release.wait(30))  # occupies the only place
        try:
            refused = client.post("/v1/explain", json={"question": EQUATION, **SMALL})
            assert "busy" in _problem(refused, 503)
            assert int(refused.headers["retry-after"]) >= 1
            assert client.get("/healthz").json()["pending"] == 1
        finally:
            release.set()
        blocking.future.result(timeout=30)  # its place is free before its caller hears back
        assert client.get("/healthz").json()["pending"] == 0
        assert client.post("/v1/explain", json={"question": EQUATION, **SMALL}).status_code == 200


def test_work_past_the_time_limit_is_stopped_with_504(shipped, tmp_path):
    settings = ServerSettings(store=tmp_path / "r.sqlite3", time_limit=1e-6)
    with TestClient(create_app(shipped, settings)) as client:
        assert "--time-limit" in _problem(client.post("/v1/explain", json={"question": EQUATION}), 504)
        stream = client.post("/v1/explain/stream", json={"question": EQUATION})
        error = [e for e in _events(stream.text) if e[0] == "error"]
        assert error and error[0][1]["status"] == 504
        assert len(client.app.state.store) == 0


def _events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_the_stream_sends_progress_the_chain_then_the_result(client):
    response = client.post("/v1/explain/stream", json={"question": EQUATION, **SMALL})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    names = [name for name, _ in events]
    assert names[0] == "queued" and names[-1] == "result"
    phases = [data["name"] for name, data in events if name == "phase"]
    assert phases[:2] == ["generation", "scoring"] and "validation" in phases
    chain = next(data["text"] for name, data in events if name == "chain")
    result = events[-1][1]
    assert result["report"]["chain"] == chain
    assert names.index("chain") < names.index("result")
    assert client.get(f"/v1/reports/{result['id']}").status_code == 200


def test_reports_survive_a_restart_and_the_store_keeps_the_newest(shipped, tmp_path):
    path = tmp_path / "reports.sqlite3"
    with TestClient(create_app(shipped, ServerSettings(store=path))) as client:
        report_id = _explain(client)["id"]
    with TestClient(create_app(shipped, ServerSettings(store=path))) as client:
        after_restart = client.get(f"/v1/reports/{report_id}")
    assert after_restart.status_code == 200

    report = Report.model_validate(after_restart.json()["report"])
    store = ReportStore(tmp_path / "small.sqlite3", capacity=2)
    ids = [store.add(report) for _ in range(3)]
    assert len(store) == 2 and store.get(ids[0]) is None and store.get(ids[2]) == report
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="not a readable SQLite file"):
        ReportStore(corrupt)
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 1


def test_a_damaged_store_or_an_impossible_path_is_refused_at_start(shipped, tmp_path):
    path = tmp_path / "reports.sqlite3"
    with TestClient(create_app(shipped, ServerSettings(store=path))) as client:
        report = Report.model_validate(client.get(f"/v1/reports/{_explain(client)['id']}").json()["report"])
    store = ReportStore(path)
    for _ in range(40):
        store.add(report)
    store.close()  # the write-ahead log goes into the file
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[3 * page : 6 * page] = b"\x5a" * (3 * page)  # data pages overwritten; the header stays whole
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"damaged|not a readable SQLite file"):
        ReportStore(path)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match=r"cannot make the folder of the report store.*pass another --store"):
        ReportStore(tmp_path / "a-file" / "reports.sqlite3")


def test_health_model_page_and_openapi(client, shipped):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["pending"] == 0 and health["max_pending"] == 8
    info = client.get("/v1/model").json()
    assert info["parameters"] == sum(p.numel() for p in shipped.model.parameters())
    assert info["sage"] is True and info["calibration_temperature"] == pytest.approx(shipped.temperature)
    page = client.get("/")
    assert page.status_code == 200 and '<label for="question">' in page.text
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/explain", "/v1/explain/stream", "/v1/compare", "/v1/counterfactual", "/v1/simplify",
                 "/v1/reports/{report_id}", "/healthz", "/v1/model"):  # fmt: skip
        assert path in paths
