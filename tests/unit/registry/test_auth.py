"""The registry login's pure parts: challenges, scopes, TLS failures naming the CA setting."""

from __future__ import annotations

from opsflow.registry.auth import describe_tls_failure, parse_challenge, scope_for


def test_challenges_and_scopes_as_distribution_and_harbor_send_them():
    challenge = parse_challenge('Bearer realm="https://auth.lan/service/token",service="harbor-registry",'
                                'scope="repository:team/app:pull,push"')
    assert challenge.scheme == "bearer" and challenge.params == {"realm": "https://auth.lan/service/token",
                                                                 "service": "harbor-registry",
                                                                 "scope": "repository:team/app:pull,push"}
    assert parse_challenge('Basic realm="opsflow-registry"').scheme == "basic"
    assert scope_for("HEAD", "/v2/team/app/manifests/v1") == "repository:team/app:pull"
    assert scope_for("PUT", "/v2/team/app/manifests/v1") == "repository:team/app:pull,push"
    assert scope_for("POST", "/v2/a/b/c/blobs/uploads/") == "repository:a/b/c:pull,push"
    assert scope_for("DELETE", "/v2/team/app/manifests/sha256:" + "0" * 64) == "repository:team/app:delete"
    assert scope_for("GET", "/v2/_catalog?n=100") == "registry:catalog:*"
    assert scope_for("GET", "/v2/") is None


def test_a_certificate_verify_failure_names_the_ca_setting():
    text = ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate "
            "(_ssl.c:1006)")
    message = describe_tls_failure("https://registry.lan", OSError(text))
    assert "set ca_cert on the ContainerRegistry block" in message
    assert "unable to get local issuer certificate" in message
    assert describe_tls_failure("https://registry.lan", OSError("connection refused")) is None
