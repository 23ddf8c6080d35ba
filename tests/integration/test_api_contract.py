"""The HTTPS API keeps its published contract, tried with schemathesis against a real cluster.

For every operation in the OpenAPI schema, generated requests (valid ones and invalid
ones) go over TLS to a cluster of this module's own, as the admin and as an ordinary
user. Every answer must be documented in the schema with its body, and none may be a
500. The run is bounded and derandomized, so it is short and the same every time;
LIMEN_FUZZ_EXAMPLES=100 asks for a longer exploration (examples per operation and mode).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from limen.audit.recordings import MAX_APPEND
from tests.support.cluster import ClusterHarness

EXAMPLES = int(os.environ.get("LIMEN_FUZZ_EXAMPLES", "15"))
# The access feed streams until the client goes away; a fuzzer reading it whole would
# wait forever. Its refusals are fuzzed (ordinary user); its stream has its own tests.
STREAMING = ("/v1/watch/access",)
# A request the schema allows may still be refused as bad input (a public key that does
# not parse, a duration that is not one): a 400 for those is right, not a broken promise.
EXCLUDED = [positive_data_acceptance]


class Api:
    def __init__(self, cluster: ClusterHarness) -> None:
        self.cluster = cluster
        self.base_url = f"https://{cluster.web_addr}"
        self.ca = str(cluster.data_dir / "ca" / "tls_ca.crt")
        self.admin_token = (cluster.data_dir / "admin.token").read_text().strip()
        user = cluster.create_user("fuzzer", roles="access", logins="fuzzer")
        assert cluster.login(user).returncode == 0
        self.user_token = next(user.home.rglob("fuzzer.token")).read_text().strip()
        tls = ssl.create_default_context(cafile=self.ca)
        document = httpx.get(f"{self.base_url}/openapi.json", verify=tls).json()
        self.document = document
        self.http = requests.Session()  # one TLS connection for the whole run
        self.http.verify = self.ca

    def schema_as(self, token: str) -> Any:
        """The published schema, with its bearer scheme filled in with this token."""
        config = schemathesis.Config.from_dict(
            {"auth": {"openapi": {"HTTPBearer": {"bearer": token}}}}
        )
        return schemathesis.openapi.from_dict(self.document, config=config)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    harness = ClusterHarness(tmp_path_factory.mktemp("contract")).start()
    try:
        api = Api(harness)
        yield api
        api.http.close()
    finally:
        harness.stop()


def _fuzz(api: Api, token: str, skip: tuple[str, ...] = ()) -> tuple[list[str], Counter[str]]:
    """Every operation, valid and invalid requests: the failures, one text each, and
    the answers seen ("GET /v1/users 403")."""
    failures: list[str] = []
    answers: Counter[str] = Counter()
    for result in api.schema_as(token).get_all_operations():
        operation = result.ok()
        if operation.path in skip:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(api, operation, mode, answers)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing in it can be made invalid
            except (Exception, BaseExceptionGroup) as exc:  # each one is reported below
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures, answers


def _fuzz_operation(api: Api, operation: Any, mode: GenerationMode,
                    answers: Counter[str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call_and_validate(
            base_url=api.base_url, session=api.http, verify=api.ca, timeout=30,
            excluded_checks=EXCLUDED,
        )
        answers[f"{operation.label} {response.status_code}"] += 1

    run()


# A fuzz run takes well under a minute on an idle machine; a loaded one gets room, and a
# longer run (LIMEN_FUZZ_EXAMPLES) proportionally more.
@pytest.mark.timeout(300 * max(1, EXAMPLES // 15))
def test_the_api_keeps_its_contract_for_an_ordinary_user(api: Api) -> None:
    failures, answers = _fuzz(api, api.user_token)
    assert not failures, "\n\n".join(failures)
    # The run reached the handlers as this user: signed in, refused what roles forbid.
    assert answers["GET /v1/whoami 200"]
    assert answers["GET /v1/users 403"] and not answers["GET /v1/users 200"]
    assert answers["GET /v1/watch/access 403"]
    assert any(a.endswith(" 400") for a in answers)


@pytest.mark.timeout(300 * max(1, EXAMPLES // 15))
def test_the_api_keeps_its_contract_for_the_admin(api: Api) -> None:
    failures, answers = _fuzz(api, api.admin_token, skip=STREAMING)
    assert not failures, "\n\n".join(failures)
    for allowed in ("GET /v1/users", "GET /v1/tokens", "GET /v1/audit/events"):
        assert answers[f"{allowed} 200"], f"{allowed} never answered 200 to the admin"
    assert answers["GET /v1/recordings/{session_id} 404"]


def test_every_error_status_is_documented_with_the_error_body(api: Api) -> None:
    """Read from the published schema: no FastAPI 422, every failure is ErrorBody, and
    every route behind a login says it may refuse (403) or limit (429) the caller."""
    for path, operations in api.document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, f"{method} {path}"
            for status, response in responses.items():
                # A redirect (the SSO callback's 303 on to the CLI) is no failure: no body.
                if not status.startswith(("2", "3")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, path
            if operation.get("security"):
                assert {"403", "429"} <= set(responses), f"{method} {path}"


def test_recording_metadata_that_is_not_json_is_a_clear_400(api: Api) -> None:
    """Found by schemathesis: a body that is not JSON gave a 500."""
    sid = "5f0c8f0e-6f2b-4c3e-9a51-000000000001"
    headers = {"authorization": f"Bearer {api.admin_token}",
               "content-type": "application/json"}
    for body in (b"{not json", b"[1, 2]", b'{"start_ns": 99999999999999999999999}'):
        answer = api.http.put(f"{api.base_url}/v1/recordings/{sid}", data=body,
                              headers=headers, verify=api.ca, timeout=30)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["kind"] == "bad_parameter"
    missing = api.http.get(f"{api.base_url}/v1/recordings/{sid}", headers=headers,
                           verify=api.ca, timeout=30)
    assert missing.status_code == 404  # nothing was stored


def test_a_chunked_recording_upload_is_refused_once_past_the_limit(api: Api) -> None:
    """A body sent in chunks declares no length: the proxy counts it as it arrives and
    answers as soon as it passes the limit, without waiting for (or buffering) the rest.
    The body below never ends: only a proxy that counts answers at all."""
    sid = "5f0c8f0e-6f2b-4c3e-9a51-000000000002"
    host, port = api.cluster.web_addr.rsplit(":", 1)
    tls = ssl.create_default_context(cafile=api.ca)
    tls.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=30) as raw, \
            tls.wrap_socket(raw) as conn:
        conn.sendall((f"POST /v1/recordings/{sid}/data?offset=0 HTTP/1.1\r\n"
                      f"Host: {api.cluster.web_addr}\r\n"
                      f"Authorization: Bearer {api.admin_token}\r\n"
                      "Content-Type: application/octet-stream\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        piece = b"x" * 65536
        for _ in range(MAX_APPEND // len(piece) + 1):  # past the limit, and no last chunk
            conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        answer = ""
        while "}" not in answer:  # the status line, headers, then the JSON error
            received = conn.recv(65536)
            if not received:
                break
            answer += received.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 400"), answer[:200]
    assert f"at most {MAX_APPEND} bytes" in answer


def test_a_session_id_that_is_not_a_name_is_refused_and_listings_keep_working(
    api: Api,
) -> None:
    """Found by schemathesis: a stored session with a bad id broke every later listing."""
    headers = {"authorization": f"Bearer {api.admin_token}"}
    session = {"kind": "session", "version": "v1", "metadata": {"name": "ignored"},
               "spec": {"user": "u", "login": "u", "node_id": "n", "node_name": "n",
                        "started": "2024-01-01T00:00:00Z"}}
    refused = api.http.put(f"{api.base_url}/v1/sessions/no%20good", json=session,
                           headers=headers, verify=api.ca, timeout=30)
    assert refused.status_code == 400
    assert "session id" in refused.json()["error"]["message"]
    listed = api.http.get(f"{api.base_url}/v1/sessions", headers=headers, verify=api.ca,
                          timeout=30)
    assert listed.status_code == 200


def test_unknown_paths_and_methods_answer_with_the_error_body(api: Api) -> None:
    unknown = api.http.get(f"{api.base_url}/v1/nothing-here", verify=api.ca, timeout=30)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["kind"] == "not_found"
    wrong = api.http.delete(f"{api.base_url}/v1/ping", verify=api.ca, timeout=30)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["message"]


def test_the_access_feed_streams_what_its_schema_says(api: Api) -> None:
    """Left out of the admin's fuzz run (it never ends): its first lines, read here."""
    operation = api.document["paths"]["/v1/watch/access"]["get"]
    documented = operation["responses"]["200"]["content"]
    tls = ssl.create_default_context(cafile=api.ca)
    headers = {"authorization": f"Bearer {api.admin_token}"}
    with httpx.Client(verify=tls, base_url=api.base_url, headers=headers,
                      timeout=30) as http, http.stream("GET", "/v1/watch/access") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] in documented
        # The snapshot, up to its end; stopping there leaves the server between reads.
        ops = []
        for line in answer.iter_lines():
            ops.append(json.loads(line)["op"] if line else "")
            if ops[-1] == "ready":
                break
    assert "put" in ops  # roles, users and locks came first
