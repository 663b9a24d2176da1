"""The local registry's door: a private CA, the registry's TLS certificate, and an htpasswd login.

``opsflow stack up`` runs its registry as a real platform's is run: TLS with a certificate from a CA of its
own (``<home>/registry/tls/ca.crt``, the ``local-registry`` block's ``ca_cert``) and HTTP Basic logins
from an htpasswd file (bcrypt, the only hash distribution accepts). Keys and the htpasswd file are 0600.
The same helpers make the CA and certificates the tests give a second, token-authenticated registry.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825  # what browsers and Go's TLS accept for a leaf certificate
# distribution checks the bcrypt hash on every request (no session): cost 5, what `htpasswd -B` uses by
# default. At cost 10 each registry call cost ~70 ms of CPU, and 16,000 calls of a benchmark 19 minutes.
BCRYPT_COST = 5


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: str
    key_pem: str

    def write(self, cert_path: Path, key_path: Path) -> None:
        """The certificate (0644) and the key (0600, created so, never readable by others)."""
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_text(self.cert_pem)
        write_private(key_path, self.key_pem)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (replacing it atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "opsflow"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> KeyPair:
    """A self-signed CA (P-256) that may sign server certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def issue(ca: KeyPair, common_name: str, hosts: list[str], client: bool = False) -> KeyPair:
    """A certificate signed by ``ca`` for ``hosts`` (names and IP addresses as subjectAltNames)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def htpasswd_line(user: str, password: str) -> str:
    """One htpasswd line with a bcrypt hash (what distribution's ``auth: htpasswd`` reads)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_COST)).decode()
    return f"{user}:{hashed}\n"


@dataclass(frozen=True)
class RegistryDoor:
    """Where the stack's registry keeps its TLS material and logins."""

    root: Path  # <home>/registry

    @property
    def ca_file(self) -> Path:
        return self.root / "tls" / "ca.crt"

    @property
    def cert_file(self) -> Path:
        return self.root / "tls" / "registry.crt"

    @property
    def key_file(self) -> Path:
        return self.root / "tls" / "registry.key"

    @property
    def htpasswd_file(self) -> Path:
        return self.root / "htpasswd"

    def ensure(self, hosts: list[str], user: str, password: str) -> None:
        """Create the CA and certificate once (kept across restarts: pushed images stay trusted) and write
        the htpasswd file for ``user`` (again when the password changed)."""
        if not (self.ca_file.exists() and self.cert_file.exists() and self.key_file.exists()):
            ca = make_ca("opsflow local registry CA")
            server = issue(ca, hosts[0], hosts)
            self.ca_file.parent.mkdir(parents=True, exist_ok=True)
            write_private(self.root / "tls" / "ca.key", ca.key_pem)
            server.write(self.cert_file, self.key_file)
            self.ca_file.write_text(ca.cert_pem)
        current = self.htpasswd_file.read_text() if self.htpasswd_file.exists() else ""
        name, _, hashed = current.strip().partition(":")
        cost = hashed.split("$")[2] if hashed.count("$") >= 3 else ""
        if (name != user or not hashed or cost != f"{BCRYPT_COST:02d}"
                or not bcrypt.checkpw(password.encode(), hashed.encode())):
            write_private(self.htpasswd_file, htpasswd_line(user, password))
