"""Logging in to the real registries as opsflow does: the stack's (TLS from its CA, htpasswd) and the token-auth
one (tokens from the test issuer). Refused credentials and an untrusted CA fail with what to fix, and no secret."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from opsflow.core.errors import RegistryAuthError, RegistryTlsError
from opsflow.registry.v2 import request
from tests.support.registry_images import push_image
from tests.support.token_registry import PASSWORD, USER

pytestmark = [pytest.mark.stack]


def _registries(token_registry):
    from blocks import ContainerRegistry

    return {"htpasswd": ContainerRegistry.load("local-registry"), "token": token_registry.block()}


@pytest.mark.parametrize("kind", ["htpasswd", "token"])
def test_wrong_password_names_the_registry_and_the_user_and_echoes_no_secret(stack, token_registry, kind):
    from tasks.registry.lookup import lookup_image

    good = _registries(token_registry)[kind]
    bad = good.model_copy(update={"password": SecretStr("not-the-password-7f3a")})
    with pytest.raises(RegistryAuthError) as info:
        lookup_image.fn(bad, f"{good.host}/nothing/here", "v1")
    message = str(info.value)
    assert good.url in message and repr(good.username) in message and "check username and password" in message
    assert "not-the-password-7f3a" not in message and good.password.get_secret_value() not in message


@pytest.mark.parametrize("kind", ["htpasswd", "token"])
def test_a_certificate_the_ca_setting_does_not_trust_names_the_setting(stack, token_registry, kind):
    from tasks.registry.lookup import lookup_image

    good = _registries(token_registry)[kind]
    without_ca = good.model_copy(update={"ca_cert": None})
    with pytest.raises(RegistryTlsError, match=r"its TLS certificate is not trusted .*set ca_cert on the "
                                               r"ContainerRegistry block"):
        lookup_image.fn(without_ca, f"{good.host}/nothing/here", "v1")


def test_tokens_are_cached_per_scope_and_fetched_again_when_the_registry_refuses_one(stack, token_registry):
    repo = f"auth-{uuid.uuid4().hex[:8]}/app"
    with token_registry.block().get_client() as pusher:
        digest = push_image(pusher, repo, ["v1"], 1)
    with token_registry.block().get_client() as client:
        before = len(token_registry.issuer.token_requests(USER))
        for _ in range(20):
            assert request(client, "HEAD", f"/v2/{repo}/manifests/v1").status_code == 200
        assert len(token_registry.issuer.token_requests(USER)) == before + 1  # one pull token for 20 calls
        # A token the registry no longer accepts (expired, revoked): a 401, a new token, and the call succeeds.
        auth = client.auth
        scope = f"repository:{repo}:pull"
        auth._tokens[scope] = ("not.a.valid-token", auth._tokens[scope][1])
        resp = request(client, "HEAD", f"/v2/{repo}/manifests/v1")
        assert resp.status_code == 200 and resp.headers["Docker-Content-Digest"] == digest
        assert len(token_registry.issuer.token_requests(USER)) == before + 2
    with token_registry.block(USER, PASSWORD).get_client() as anonymous_pull_refused:
        anonymous_pull_refused.auth.username = None  # no credentials: an anonymous token grants nothing
        assert request(anonymous_pull_refused, "HEAD", f"/v2/{repo}/manifests/v1").status_code == 401
