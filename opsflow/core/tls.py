"""TLS contexts made once per process and shared by every HTTP client opsflow opens.

Building an ``ssl.SSLContext`` loads a whole CA bundle: 22-26 ms of CPU each here (57 ms wall on
the shared 2-core machine at load 7), and httpx builds one for every ``httpx.Client`` it makes,
even for a plain ``http://`` URL. A manual deploy opened a dozen such clients (health probes, the
registry lookup) before this module; the profile of ``bench/deploy.py`` had 17 % of the process's
CPU in ``ssl.create_default_context``. A context only holds trust settings and is safe to share
between threads and clients, so each distinct one is built once.
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def default_context() -> ssl.SSLContext:
    """What httpx verifies with when given ``verify=True`` (its CA bundle, ``SSL_CERT_FILE``/``SSL_CERT_DIR``
    honoured), built once."""
    import httpx

    return httpx.create_ssl_context()


@functools.lru_cache(maxsize=32)
def context_with_ca(ca_pem: str) -> ssl.SSLContext:
    """The system's CAs plus ``ca_pem`` (one or more PEM certificates), built once per distinct PEM."""
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=ca_pem)
    return context


@functools.lru_cache(maxsize=32)
def context_with_cafile(cafile: str) -> ssl.SSLContext:
    """``ssl.create_default_context(cafile=cafile)`` (what Prefect's API clients verify with), built once per file."""
    return ssl.create_default_context(cafile=cafile)
