"""The web page in a real browser: Debian's Chromium driven by Playwright against `sage-nano serve` started as
its own process on a free loopback port, with the model that ships with the package."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# Chromium's background connections are refused by this machine's closed network: keep them off.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(os.environ.get("SAGENANO_TEST_ARTIFACTS", Path(__file__).parents[1] / "runs" / "test-artifacts"))
EQUATION = "If 3x + 2 = 14, what is x?"
HESITANT = "Given 4x + 13 = 43, find x."  # the shipped pico hesitates at a token that changes its answer (x = 7.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    store = tmp_path_factory.mktemp("serve") / "reports.sqlite3"
    command = [str(Path(sys.executable).parent / "sage-nano"), "serve", "--port", str(port), "--store", str(store),
               "--threads", "1"]  # fmt: skip
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"  # the default host: loopback only
    try:
        for _ in range(120):
            try:
                _get(f"{base}/healthz")
                break
            except OSError:
                assert process.poll() is None, f"the server exited: {log.read_text()}"
                time.sleep(0.5)
        else:
            pytest.fail(f"the server did not answer within 60 s: {log.read_text()}")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def page():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1300})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def _report(server: str, page) -> dict:
    report_id = page.locator("#download").get_attribute("href").split("/")[3]
    return _get(f"{server}/v1/reports/{report_id}")


def test_the_server_runs_on_the_threads_it_was_given(server):
    assert _get(f"{server}/healthz")["threads"] == 1


def test_ask_click_compare_what_if_and_switch_depth(server, page):
    page.goto(server)
    expect(page.locator("#model-info")).to_contain_text("SageForCausalLM")
    page.get_by_label("Question", exact=True).fill(EQUATION)
    page.get_by_role("button", name="Explain").click()  # the shipped pico is sure of every token here
    closest = re.compile(r"the closest call scored 0\.\d\d")
    expect(page.locator("#no-decisions")).to_contain_text(closest, timeout=60_000)
    page.get_by_label("Question", exact=True).fill(HESITANT)
    page.get_by_role("button", name="Explain").click()
    expect(page.locator("#steps .decision-token").first).to_be_visible(timeout=60_000)
    expect(page.locator("#no-decisions")).to_be_hidden()
    expect(page.locator("#progress")).to_contain_text("validation")
    served = _report(server, page)
    report = served["report"]
    assert page.locator("#steps > li").count() == len(report["steps"])
    assert page.locator(".decision-token").count() == len(report["decision_points"])
    expect(page.locator("#answer")).to_contain_text(f"Answer: {report['answer']}")
    expect(page.locator("#explanation")).to_have_text(served["texts"]["intermediate"])

    # a decision point, by keyboard: its alternatives and their outcomes
    first = report["decision_points"][0]
    page.locator(".decision-token").first.focus()
    page.keyboard.press("Enter")
    rows = page.locator("#alternatives tbody tr")
    removed = report["validation"]["removed_claims"]
    refuted = {c["stated"]["token_id"] for c in removed if c["kind"] == "alternative"
               and c["stated"]["position"] == first["position"]}  # fmt: skip
    shown = [a for a in first["alternatives"] if a["token_id"] not in refuted]  # refuted ones are not shown as facts
    expect(rows).to_have_count(len(shown))
    expect(rows.first).to_contain_text(shown[0]["token"].strip() or " ")
    page.get_by_role("button", name=re.compile("^Why")).first.click()
    expect(page.locator("#comparison")).to_contain_text("rather than", timeout=30_000)

    # the depth switch swaps every text without a new request
    page.get_by_label("novice").check()
    expect(page.locator("#explanation")).to_have_text(served["texts"]["novice"])
    assert served["texts"]["novice"] != served["texts"]["intermediate"]
    expect(page.locator("#comparison")).not_to_contain_text("log-odds")

    # what if: one number edited, the diff shown
    page.get_by_label(re.compile("Edit the question")).fill(HESITANT.replace("+ 13", "+ 16"))
    page.get_by_role("button", name="What if?").click()
    expect(page.locator("#diff")).to_contain_text("You changed “13” to “16”.", timeout=60_000)
    expect(page.locator("#diff-steps li")).not_to_have_count(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "serve-page.png", full_page=True)

    # the edited question's report opens in place
    page.get_by_role("button", name="Open the edited question's report").click()
    expect(page.get_by_label("Question", exact=True)).to_have_value(HESITANT.replace("+ 13", "+ 16"))


def test_simpler_way_and_errors_are_shown(server, page):
    page.goto(server)
    page.get_by_role("button", name="Explain").click()
    expect(page.locator("#steps > li").first).to_be_visible(timeout=60_000)
    page.get_by_label("samples").fill("3")
    page.get_by_role("button", name="Look for a simpler way").click()
    expect(page.locator("#simpler-text")).to_contain_text("chains sampled", timeout=60_000)
    page.get_by_label("Question", exact=True).fill("   ")
    page.get_by_role("button", name="Explain").click()
    expect(page.get_by_role("alert")).to_contain_text("no visible text")


def test_every_control_has_a_label(server, page):
    page.goto(server)
    unlabeled = page.evaluate("""() => [...document.querySelectorAll('input, textarea, button')]
        .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map((e) => e.outerHTML)""")
    assert unlabeled == []


def test_a_plain_request_whose_client_leaves_stops_and_stores_nothing(server):
    # A first request holds the model, so the second queues behind it and its client hangs up while it waits: the
    # outcome does not depend on how fast the machine explains.
    before = _get(f"{server}/healthz")
    body = json.dumps({"question": HESITANT, "max_new_tokens": 256, "alternatives": 10}).encode()
    post = urllib.request.Request(f"{server}/v1/explain", data=body, headers={"Content-Type": "application/json"})
    first = threading.Thread(target=lambda: urllib.request.urlopen(post, timeout=120).read())
    first.start()
    time.sleep(0.2)
    host, port = server.removeprefix("http://").split(":")
    head = f"POST /v1/explain HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.3)  # queued behind the first; then the client hangs up
    first.join(timeout=120)
    deadline = time.time() + 60
    while _get(f"{server}/healthz")["pending"] and time.time() < deadline:
        time.sleep(0.2)
    after = _get(f"{server}/healthz")
    assert after["pending"] == 0 and after["reports"] == before["reports"] + 1, "only the first request's report"
