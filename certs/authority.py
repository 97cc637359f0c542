"""A cluster certificate authority: build a CA and issue identity certificates.

Pure: keys and certificates in, keys and certificates out; the caller passes
the time (`now`). Reading and writing files is `certs.store`'s job.

Keys are ECDSA P-256 (small, fast handshakes, supported by every gRPC
build). Every leaf certificate carries exactly one cluster identity (see
`certs.identity`), both `serverAuth` and `clientAuth` for nodes and the
collector (they serve and dial), `clientAuth` only for operators.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.identity import Identity, identity_from_uris

CA_DAYS = 3650
LEAF_DAYS = 365
# `cl-certs ensure` reissues a certificate that expires sooner than this.
RENEW_BEFORE = dt.timedelta(days=30)
# Tolerated clock skew between the machine issuing and the ones checking.
BACKDATE = dt.timedelta(minutes=5)
ORGANIZATION = "chandy-lamport"

PrivateKey = ec.EllipticCurvePrivateKey
CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class AuthorityError(ValueError):
    """A CA or certificate that cannot be used; the message says why."""


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey | rsa.RSAPrivateKey  # our own keys are EC; a brought CA may be RSA


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(
    now: dt.datetime, name: str = "chandy-lamport cluster CA", days: int = CA_DAYS
) -> Issued:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    if days < 1:
        raise AuthorityError("a CA must be valid for at least one day")
    key = new_key()
    subject = _name(name, "ca")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def check_ca(cert: x509.Certificate, key: object, now: dt.datetime) -> None:
    """Refuse a (brought-your-own) CA that cannot sign our certificates."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise AuthorityError("the certificate is not a CA (no BasicConstraints CA:TRUE)")
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise AuthorityError("the CA key must be an EC or RSA private key")
    if key.public_key() != cert.public_key():
        raise AuthorityError("the CA key does not belong to the CA certificate")
    if cert.not_valid_after_utc <= now:
        raise AuthorityError(
            f"the CA certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )


def issue(
    ca: Issued,
    identity: Identity,
    now: dt.datetime,
    days: int = LEAF_DAYS,
    extra_dns: tuple[str, ...] = (),
) -> Issued:
    """A certificate for `identity`, signed by `ca`, valid `days` (never past the CA)."""
    if days < 1:
        raise AuthorityError("a certificate must be valid for at least one day")
    not_after = min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc)
    if not_after <= now:
        raise AuthorityError(
            f"the CA certificate expired on {ca.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    key = new_key()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if identity.role != "operator":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(identity.uri),
        x509.DNSName(identity.dns_name),
    ]
    names += [x509.DNSName(name) for name in extra_dns if name != identity.dns_name]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(identity.name, identity.role))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def identity_of(cert: x509.Certificate) -> Identity | None:
    """The one cluster identity `cert` names in its SAN URIs, or None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return identity_from_uris(san.get_values_for_type(x509.UniformResourceIdentifier))


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """`cert` was issued by `ca` (issuer name and signature)."""
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
        return False
    return True


def problems_with(
    cert: x509.Certificate, ca: x509.Certificate, identity: Identity, now: dt.datetime
) -> str | None:
    """Why `cert` should be (re)issued for `identity`, or None if it is fine."""
    if identity_of(cert) != identity:
        return f"it names {identity_of(cert) or 'no cluster identity'}, not {identity}"
    if not signed_by(cert, ca):
        return "it was not issued by this CA"
    if cert.not_valid_after_utc <= now:
        return f"it expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"it expires soon ({cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
    return None
