"""The receiver over real HTTP against the real Prefect server: codes, dedup, durability, events, latency."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from opsflow.core.prefect_api import api_client
from tests.support.deliveries import pr_payload, push_payload, run_id_of, signed, status_headers
from tests.support.net import free_port
from tests.support.webhook_receiver import DEPLOYMENT, REPO, SECRET, ReceiverProcess

pytestmark = pytest.mark.stack


def _sha() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


def _run(run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        deployment = client.read_deployment(run.deployment_id)
    return run, deployment


def _runs_where(**params) -> list:
    """The newest runs (200) whose parameters include ``params``. The refused deliveries' tests each look for a
    PR number of their own on this module's application (``_runs_where(app="hooks-app", pr=7)``): not a count
    of all runs, since the deliveries earlier tests accepted may still be creating theirs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        newest = client.read_flow_runs(limit=200, sort=FlowRunSort.EXPECTED_START_TIME_DESC)
    return [r for r in newest if all((r.parameters or {}).get(k) == v for k, v in params.items())]


def test_a_pull_request_starts_one_run_with_the_right_parameters_and_redelivery_reuses_it(receiver):
    head = _sha()
    headers, body = signed("github", "pull_request", pr_payload("github", "opened", 5, head, REPO), SECRET)
    answer = httpx.post(receiver.url, content=body, headers=headers, timeout=10)
    assert answer.status_code == 202, answer.text
    run, deployment = _run(run_id_of(answer, receiver.url, SECRET))
    assert deployment.name == DEPLOYMENT and answer.json()["deployment"] == f"gitops-pr/{DEPLOYMENT}"
    assert run.parameters == {"app": "hooks-app", "pr": 5, "sha": head, "forge_block": "hooks-forge"}
    assert {"webhook", "github"} <= set(run.tags)
    again = httpx.post(receiver.url, content=body, headers=headers, timeout=10)
    assert again.status_code == 202
    assert run_id_of(again, receiver.url, SECRET) == run_id_of(answer, receiver.url, SECRET)
    # A new delivery id for the same PR head (the forge re-sent it as a new delivery): still one run.
    headers2, _ = signed("github", "pull_request", pr_payload("github", "opened", 5, head, REPO), SECRET)
    third = httpx.post(receiver.url, content=body, headers=headers2, timeout=10)
    assert run_id_of(third, receiver.url, SECRET) == run_id_of(answer, receiver.url, SECRET)


def test_a_merged_pr_and_the_push_of_its_merge_commit_are_one_merge_run(receiver):
    merge = _sha()
    headers, body = signed("github", "pull_request", pr_payload("github", "closed", 6, _sha(), REPO, True, merge),
                           SECRET)
    merged = httpx.post(receiver.url, content=body, headers=headers, timeout=10)
    assert merged.status_code == 202
    run, _ = _run(run_id_of(merged, receiver.url, SECRET))
    assert run.parameters["sha"] == merge and run.parameters["branch"] == "main" and run.parameters["pr"] == 6
    headers, body = signed("github", "push", push_payload("github", "refs/heads/main", merge, REPO), SECRET)
    push = httpx.post(receiver.url, content=body, headers=headers, timeout=10)
    assert push.status_code == 202 and run_id_of(push, receiver.url, SECRET) == run_id_of(merged, receiver.url, SECRET)


@pytest.mark.parametrize("change, code", [
    ("bad-signature", 401), ("no-signature", 401), ("malformed", 400), ("missing-field", 400),
    ("unknown-repo", 204), ("ignored-action", 204), ("other-event", 204), ("too-big", 413),
])
def test_bad_and_ignored_deliveries_get_their_codes_and_start_nothing(receiver, change, code):
    payload = pr_payload("github", "opened", 7, _sha(), REPO)
    event = "pull_request"
    if change == "malformed":
        payload = b'{"action": "opened", "numb'
    elif change == "missing-field":
        del payload["pull_request"]["head"]
    elif change == "unknown-repo":
        payload["repository"]["full_name"] = "someone/else"
    elif change == "ignored-action":
        payload["action"] = "labeled"
    elif change == "other-event":
        event = "issues"
    elif change == "too-big":
        payload["padding"] = "x" * 70_000
    headers, body = signed("github", event, payload, SECRET)
    if change == "bad-signature":
        headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    elif change == "no-signature":
        del headers["X-Hub-Signature-256"]
    answer = httpx.post(receiver.url, content=body, headers=headers, timeout=10)
    assert answer.status_code == code, answer.text
    if code == 400:
        assert "head" in answer.json()["error"] or "JSON" in answer.json()["error"]
    assert _runs_where(app="hooks-app", pr=7) == []


def test_other_methods_and_paths(receiver):
    assert httpx.get(receiver.url, timeout=5).status_code == 405
    assert httpx.post(receiver.url.replace("github", "gitlab"), content=b"{}", timeout=5).status_code == 404


def test_an_accepted_delivery_emits_an_event(receiver, hooks_setup):
    headers, body = signed("github", "pull_request", pr_payload("github", "reopened", 8, _sha(), REPO), SECRET)
    answer = httpx.post(receiver.url, content=body, headers=headers, timeout=10)
    delivery = headers["X-GitHub-Delivery"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with api_client() as api:
            found = api.post("events/filter", json={
                "filter": {"event": {"name": ["opsflow.webhook.accepted"]},
                           "resource": {"id": [f"opsflow.webhook.delivery.{delivery}"]}}}).json()
        if found.get("events"):
            event = found["events"][0]
            assert event["payload"]["deployment"] == f"gitops-pr/{DEPLOYMENT}"
            assert any(r["prefect.resource.id"] == f"prefect.flow-run.{run_id_of(answer, receiver.url, SECRET)}"
                       for r in event["related"])
            return
        time.sleep(0.5)
    raise AssertionError("no opsflow.webhook.accepted event")


class Proxy:
    """A TCP forwarder to the Prefect server that can be cut off (the API "goes down")."""

    def __init__(self, target_port: int):
        import socket
        import threading

        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open = True
        self.delay_s = 0.0  # added before each answer from the server (a slow API)
        self.conns: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.conns += [client, upstream]
            for a, b, slow in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(a, b, slow), daemon=True).start()

    def _pipe(self, a, b, slow: bool) -> None:
        try:
            while data := a.recv(65536):
                if slow and self.delay_s:
                    time.sleep(self.delay_s)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (a, b):
                try:
                    sock.close()
                except OSError:
                    pass

    def cut(self) -> None:
        self.open = False
        for sock in self.conns:
            try:
                sock.close()
            except OSError:
                pass


def test_with_prefect_down_the_delivery_is_accepted_queued_and_started_once_after_a_restart(hooks_setup, tmp_path):

    proxy = Proxy(hooks_setup.prefect_port)
    journal = tmp_path / "journal.sqlite3"
    flaky = ReceiverProcess(free_port(), journal, f"http://127.0.0.1:{proxy.port}/api").start()
    head = _sha()
    headers, body = signed("github", "pull_request", pr_payload("github", "opened", 9, head, REPO), SECRET)
    try:
        proxy.cut()
        answer = httpx.post(flaky.url, content=body, headers=headers, timeout=30)
        # Recorded before the answer, so accepted: 202 without a run id, and the status says queued.
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "queued" and answer.json()["flow_run_id"] is None
        assert answer.json()["delivery"] == headers["X-GitHub-Delivery"]
        delivery = headers["X-GitHub-Delivery"]
        status = httpx.get(f"{flaky.url}/deliveries/{delivery}", timeout=5,
                           headers=status_headers(SECRET, delivery)).json()
        assert status["status"] == "queued" and status["flow_run_id"] is None
    finally:
        assert flaky.stop() == 0
    # Restarted against a reachable server, the receiver starts what it had recorded, exactly once.
    restarted = ReceiverProcess(free_port(), journal, hooks_setup.prefect_api_url).start()
    try:
        deadline = time.monotonic() + 30
        while not (runs := _runs_where(sha=head)) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert len(runs) == 1
        again = httpx.post(restarted.url, content=body, headers=headers, timeout=10)
        assert again.status_code == 202 and run_id_of(again, restarted.url, SECRET) == str(runs[0].id)
    finally:
        assert restarted.stop() == 0


def test_with_a_slow_prefect_api_the_answer_does_not_wait_for_the_run(hooks_setup, tmp_path):
    """The answer waits a bounded time (80 ms by default); the run is then created in the background."""
    from prefect.client.orchestration import get_client

    proxy = Proxy(hooks_setup.prefect_port)
    slow = ReceiverProcess(free_port(), tmp_path / "journal.sqlite3", f"http://127.0.0.1:{proxy.port}/api").start()
    head = _sha()
    headers, body = signed("github", "pull_request", pr_payload("github", "opened", 11, head, REPO), SECRET)
    try:
        proxy.delay_s = 1.5
        answer = httpx.post(slow.url, content=body, headers=headers, timeout=30)
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "queued" and answer.json()["flow_run_id"] is None
        proxy.delay_s = 0
        run_id = run_id_of(answer, slow.url, SECRET)
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(run_id).parameters["sha"] == head
        assert httpx.get(f"{slow.url}/deliveries/nope", timeout=5,
                         headers=status_headers(SECRET, "nope")).status_code == 404
    finally:
        assert slow.stop() == 0


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes (what an HTTP client library would refuse or normalize) and read the answer."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_slow_header_and_body_clients_are_cut_off_while_valid_deliveries_are_answered(receiver):
    """The receiver runs with 2 s header and body deadlines (tests/support/webhook_receiver.py)."""
    import socket

    headers, body = signed("github", "pull_request", pr_payload("github", "opened", 12, _sha(), REPO), SECRET)
    slow = []
    for i in range(60):
        sock = socket.create_connection(("127.0.0.1", receiver.port), timeout=30)
        if i % 2:  # the head, then nothing more
            sock.sendall(b"POST /hooks/github HTTP/1.1\r\nHost: hooks\r\nX-GitHub-Event: pull_request\r\n")
        else:  # the whole head, then a trickle of the body
            sock.sendall(b"POST /hooks/github HTTP/1.1\r\nHost: hooks\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 4000\r\n\r\n{\"action\":")
        slow.append(sock)
    try:
        with httpx.Client(timeout=10) as http:  # meanwhile, the forge's deliveries are answered
            for _ in range(10):
                h, b = signed("github", "pull_request", pr_payload("github", "opened", 12, _sha(), REPO), SECRET)
                assert http.post(receiver.url, content=b, headers=h).status_code == 202
        answers = []
        for sock in slow:  # each is cut off by the server: an answer, then the end of the stream
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            answers.append(received.split(b"\r\n", 1)[0])
        assert set(answers) == {b"HTTP/1.1 408 Request Timeout"}, set(answers)
    finally:
        for sock in slow:
            sock.close()
    assert httpx.post(receiver.url, content=body, headers=headers, timeout=10).status_code == 202


def test_deep_json_repeated_content_length_and_dot_segments_are_refused(receiver):
    deep = b'{"action": "opened", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    headers, body = signed("github", "pull_request", deep, SECRET)
    answer = httpx.post(receiver.url, content=body, headers=headers, timeout=10)
    assert answer.status_code == 400 and "nested deeper" in answer.json()["error"]

    headers, body = signed("github", "pull_request", pr_payload("github", "opened", 13, _sha(), REPO), SECRET)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
    twice = (b"POST /hooks/github HTTP/1.1\r\nHost: hooks\r\n" + head + f"Content-Length: {len(body)}\r\n".encode() * 2
             + b"\r\n" + body)
    assert _raw(receiver.port, twice).startswith(b"HTTP/1.1 400 ")
    for path in (b"/hooks/../hooks/github", b"/hooks/%2e%2e/hooks/github", b"/hooks/./github", b"//hooks/github"):
        request = (b"POST " + path + b" HTTP/1.1\r\nHost: hooks\r\n" + head
                   + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert _raw(receiver.port, request).startswith(b"HTTP/1.1 400 "), path
    assert _runs_where(app="hooks-app", pr=13) == []


def test_the_delivery_status_needs_the_webhook_secrets_signature(receiver):
    headers, body = signed("github", "pull_request", pr_payload("github", "opened", 14, _sha(), REPO), SECRET)
    delivery = headers["X-GitHub-Delivery"]
    assert httpx.post(receiver.url, content=body, headers=headers, timeout=10).status_code == 202
    url = f"{receiver.url}/deliveries/{delivery}"
    assert httpx.get(url, timeout=5).status_code == 401
    assert httpx.get(url, timeout=5, headers=status_headers("not-the-secret", delivery)).status_code == 401
    signed_status = httpx.get(url, timeout=5, headers=status_headers(SECRET, delivery))
    assert signed_status.status_code == 200 and signed_status.json()["delivery"] == delivery


def test_the_trusted_label_on_a_held_pull_request_starts_a_run_of_its_own(receiver):
    """A maintainer's label is a delivery that starts the PR deployment again (the held run was the first)."""
    head = _sha()
    opened = signed("github", "pull_request", pr_payload("github", "opened", 15, head, REPO), SECRET)
    first = run_id_of(httpx.post(receiver.url, content=opened[1], headers=opened[0], timeout=10), receiver.url, SECRET)
    labeled_payload = {**pr_payload("github", "labeled", 15, head, REPO), "label": {"name": "safe-to-test"}}
    headers, body = signed("github", "pull_request", labeled_payload, SECRET)
    answer = httpx.post(receiver.url, content=body, headers=headers, timeout=10)
    assert answer.status_code == 202 and answer.json()["deployment"] == f"gitops-pr/{DEPLOYMENT}"
    second = run_id_of(answer, receiver.url, SECRET)
    assert second != first and _run(second)[0].parameters == _run(first)[0].parameters
    other = {**labeled_payload, "label": {"name": "needs-review"}}
    headers, body = signed("github", "pull_request", other, SECRET)
    assert httpx.post(receiver.url, content=body, headers=headers, timeout=10).status_code == 204


def test_with_a_certificate_and_key_the_receiver_serves_https_only(hooks_setup, tmp_path):
    from opsflow.stack.tls import issue, make_ca

    ca = make_ca("webhook test CA")
    issue(ca, "127.0.0.1", ["127.0.0.1", "localhost"]).write(tmp_path / "hooks.crt", tmp_path / "hooks.key")
    tls = ReceiverProcess(free_port(), tmp_path / "journal.sqlite3", hooks_setup.prefect_api_url, ca_pem=ca.cert_pem)
    tls.args = [*tls.args, "--tls-cert", str(tmp_path / "hooks.crt"), "--tls-key", str(tmp_path / "hooks.key")]
    tls.start()
    try:
        headers, body = signed("github", "pull_request", pr_payload("github", "opened", 16, _sha(), REPO), SECRET)
        answer = httpx.post(tls.url, content=body, headers=headers, timeout=10, verify=tls.verify)
        assert answer.status_code == 202, answer.text
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer from a TLS port
            httpx.post(tls.url.replace("https://", "http://"), content=body, headers=headers, timeout=5)
    finally:
        assert tls.stop() == 0
