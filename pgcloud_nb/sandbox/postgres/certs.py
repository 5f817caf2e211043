"""TLS material for sandbox services: one CA per service and a server certificate.

The real service has a per-instance CA and requires TLS 1.3 (docs/api-behaviour.md §11.3),
so each sandbox service gets the same: the CA certificate is what the CA
endpoint returns and what users pass as ``sslrootcert``; the server
certificate names the service's hostname(s) plus ``localhost``, 127.0.0.1 and
::1, so ``sslmode=verify-full`` works with the hostname (connecting through
``hostaddr=127.0.0.1``) as well as with the loopback address itself.

Keys are EC P-256: generating one takes a millisecond, which matters because a
create must reach ``running`` within seconds. Certificates last ~10 years.
:func:`install` writes a fresh set for a server (0600, the server user's, as
everything below the sandbox home); the CA key is never kept, so nothing can
mint more certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pgcloud_nb.sandbox.postgres.osuser import write_owned

__all__ = ["CA_FILE", "copy_identity", "install", "make_ca", "make_server_cert"]

CA_FILE = "ca.pem"  # in the service folder: what the API's CA endpoint returns

VALIDITY = dt.timedelta(days=3652)
# Tolerate a client clock that runs a little behind.
BACKDATE = dt.timedelta(hours=1)
ALWAYS_DNS = ("localhost",)
ALWAYS_IP = ("127.0.0.1", "::1")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def make_ca(cn: str) -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, private key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pgcloud-nb sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn[:64]),
        ]
    )
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_server_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    dns_names: Iterable[str],
    ip_addresses: Iterable[str] = (),
) -> tuple[bytes, bytes]:
    """A server certificate signed by the CA: (certificate PEM, private key PEM).

    The SAN holds ``dns_names`` and ``ip_addresses`` plus localhost, 127.0.0.1 and ::1;
    the first DNS name is also the CN.
    """
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the CA key must be an EC key made by make_ca()")
    dns = list(dict.fromkeys([*dns_names, *ALWAYS_DNS]))  # dedupe, keep order
    ips = list(dict.fromkeys([*ip_addresses, *ALWAYS_IP]))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0][:64])])
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    san += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def install(root: Path, pgdata: Path, hostnames: list[str]) -> None:
    """A new CA (``root/ca.pem``) and server certificate and key (in ``pgdata``)."""
    ca_cert, ca_key = make_ca(f"{hostnames[0] if hostnames else 'sandbox'} CA")
    cert, key = make_server_cert(ca_cert, ca_key, hostnames)
    write_owned(root / CA_FILE, ca_cert)
    write_owned(pgdata / "server.crt", cert)
    write_owned(pgdata / "server.key", key)


def copy_identity(src_root: Path, src_pgdata: Path, root: Path, pgdata: Path) -> None:
    """Serve the same CA, certificate and key as the server in ``src_root``."""
    write_owned(root / CA_FILE, (src_root / CA_FILE).read_bytes())
    for name in ("server.crt", "server.key"):
        write_owned(pgdata / name, (src_pgdata / name).read_bytes())
