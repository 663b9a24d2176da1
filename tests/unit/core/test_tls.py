"""TLS contexts built once per process (opsflow/core/tls.py) and what uses them."""

from __future__ import annotations

import ssl

import pytest

from opsflow.core import tls
from opsflow.core.errors import InvalidInput


@pytest.fixture(scope="module")
def ca_pem() -> str:
    from opsflow.stack.tls import make_ca

    return make_ca("tls unit test CA").cert_pem


def test_the_default_context_is_built_once_and_verifies():
    context = tls.default_context()
    assert context is tls.default_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_context_with_a_ca_trusts_it_and_is_built_once_per_pem(ca_pem):
    context = tls.context_with_ca(ca_pem)
    assert context is tls.context_with_ca(ca_pem)
    names = [dict(part[0] for part in cert["subject"]).get("commonName") for cert in context.get_ca_certs()]
    assert "tls unit test CA" in names
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_registry_clients_share_the_contexts_and_never_turn_verification_off_with_a_ca(ca_pem):
    from opsflow.registry.auth import tls_verify

    assert tls_verify(None) is tls.default_context()
    assert tls_verify(None, verify=False) is False
    assert tls_verify(ca_pem, verify=False) is tls.context_with_ca(ca_pem)


def test_a_pem_that_looks_right_but_does_not_load_is_refused(ca_pem):
    from blocks.fields import check_pem_certificates

    assert check_pem_certificates(ca_pem) == ca_pem.strip() + "\n"
    lines = ca_pem.strip().splitlines()
    broken = "\n".join([lines[0], lines[1][:-8] + "AAAAAAAA", *lines[2:]])
    with pytest.raises(InvalidInput, match="does not load"):
        check_pem_certificates(broken)
