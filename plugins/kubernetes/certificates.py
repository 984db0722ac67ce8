"""The webhook's built-in certificate authority and serving certificate.

The API server calls the webhook over HTTPS and trusts it through the ``caBundle`` of the
MutatingWebhookConfiguration. MacPool keeps a self-signed CA and a serving certificate for the
Service's DNS names, and rotates them before they expire. A CA rotation keeps the previous CA in
the bundle until it expires (overlap): the integrator publishes the new bundle first, then swaps
the serving certificate, so no review ever fails verification in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_VALIDITY: Final = timedelta(days=365)
SERVING_VALIDITY: Final = timedelta(days=182)
#: Rotate this long before expiry (KubeMacPool's manifests use one day of overlap).
ROTATE_BEFORE: Final = timedelta(days=1)
#: Certificates start a little in the past so small clock skews do not reject them.
BACKDATE: Final = timedelta(minutes=5)
#: KubeMacPool caps the bundle at 100 certificates; so do we.
MAX_BUNDLE: Final = 100


@dataclass(frozen=True)
class KeyPair:
    """A certificate with its private key."""

    certificate: x509.Certificate
    key: PrivateKey


@dataclass(frozen=True)
class WebhookCertificates:
    """The current CA, the serving certificate it signed, and the CAs the API server trusts.

    ``ca_bundle`` starts with the current CA; older, unexpired CAs follow during an overlap.
    """

    ca: KeyPair
    serving: KeyPair
    ca_bundle: tuple[x509.Certificate, ...]

    @property
    def ca_bundle_pem(self) -> bytes:
        """The bundle as concatenated PEM, the form ``caBundle`` takes (base64 of this)."""
        return pem_certificates(self.ca_bundle)


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use for the Service (KubeMacPool's four SANs)."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def generate_key(key_type: KeyType = "ec") -> PrivateKey:
    """A new private key: EC P-256 (small, fast) or RSA-2048 (what KubeMacPool uses)."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r}: use ec or rsa")


def create_ca(
    *,
    common_name: str,
    now: datetime | None = None,
    valid_for: timedelta = CA_VALIDITY,
    key_type: KeyType = "ec",
) -> KeyPair:
    """A self-signed CA that may sign end-entity certificates only."""
    key = generate_key(key_type)
    start = _now(now) - BACKDATE
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(name, name, key.public_key(), start, start + BACKDATE + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True, rsa_key=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(certificate, key)


def issue_serving_certificate(
    ca: KeyPair,
    *,
    service: str,
    namespace: str,
    now: datetime | None = None,
    valid_for: timedelta = SERVING_VALIDITY,
    key_type: KeyType = "ec",
) -> KeyPair:
    """A server certificate for the Service's DNS names, signed by ``ca``; never outlives it."""
    key = generate_key(key_type)
    start = _now(now) - BACKDATE
    end = min(start + BACKDATE + valid_for, ca.certificate.not_valid_after_utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{service}.{namespace}.svc")])
    names = [x509.DNSName(name) for name in service_dns_names(service, namespace)]
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        _builder(subject, ca.certificate.subject, key.public_key(), start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False, rsa_key=isinstance(key, rsa.RSAPrivateKey)), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(certificate, key)


def create_certificates(
    *,
    service: str,
    namespace: str,
    now: datetime | None = None,
    ca_valid_for: timedelta = CA_VALIDITY,
    serving_valid_for: timedelta = SERVING_VALIDITY,
    key_type: KeyType = "ec",
) -> WebhookCertificates:
    """A fresh CA and serving certificate for the webhook Service."""
    ca = create_ca(common_name=f"{service}-ca", now=now, valid_for=ca_valid_for, key_type=key_type)
    serving = issue_serving_certificate(
        ca, service=service, namespace=namespace, now=now, valid_for=serving_valid_for,
        key_type=key_type,
    )  # fmt: skip
    return WebhookCertificates(ca=ca, serving=serving, ca_bundle=(ca.certificate,))


def needs_rotation(
    certificate: x509.Certificate, now: datetime, *, before: timedelta = ROTATE_BEFORE
) -> bool:
    """Whether ``certificate`` is within ``before`` of its expiry (or past it, or not yet valid)."""
    moment = _now(now)
    if moment < certificate.not_valid_before_utc:
        return True
    return moment >= certificate.not_valid_after_utc - before


def rotate_certificates(
    current: WebhookCertificates,
    *,
    service: str,
    namespace: str,
    now: datetime | None = None,
    ca_before: timedelta = ROTATE_BEFORE,
    serving_before: timedelta = ROTATE_BEFORE,
    ca_valid_for: timedelta = CA_VALIDITY,
    serving_valid_for: timedelta = SERVING_VALIDITY,
    key_type: KeyType = "ec",
) -> WebhookCertificates:
    """Renew what is due; returns ``current`` itself when nothing is.

    A due CA is replaced and the old one stays in the bundle until it expires; the serving
    certificate is re-issued when it is due, was signed by an older CA, or lacks one of the
    Service's names (e.g. after the Service was renamed). Expired CAs leave the bundle.
    """
    moment = _now(now)
    ca = current.ca
    bundle = list(current.ca_bundle)
    if needs_rotation(ca.certificate, moment, before=ca_before):
        ca = create_ca(
            common_name=_common_name(ca.certificate) or f"{service}-ca",
            now=moment,
            valid_for=ca_valid_for,
            key_type=key_type,
        )
        bundle.insert(0, ca.certificate)
    bundle = _prune(bundle, moment)
    serving = current.serving
    if (
        ca is not current.ca
        or needs_rotation(serving.certificate, moment, before=serving_before)
        or set(dns_names(serving.certificate)) != set(service_dns_names(service, namespace))
    ):
        serving = issue_serving_certificate(
            ca, service=service, namespace=namespace, now=moment, valid_for=serving_valid_for,
            key_type=key_type,
        )  # fmt: skip
    if ca is current.ca and serving is current.serving and tuple(bundle) == current.ca_bundle:
        return current
    return WebhookCertificates(ca=ca, serving=serving, ca_bundle=tuple(bundle))


def dns_names(certificate: x509.Certificate) -> list[str]:
    """The DNS subject alternative names of a certificate."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(extension.value.get_values_for_type(x509.DNSName))


# --- PEM ---------------------------------------------------------------------------------------


def pem_certificates(certificates: Iterable[x509.Certificate]) -> bytes:
    """Concatenated PEM of the certificates, in order."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates)


def pem_private_key(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (the file itself is what is protected: mode 0600 or a Secret)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; raises ValueError when there is none."""
    certificates = x509.load_pem_x509_certificates(data)
    if not certificates:  # pragma: no cover - cryptography already raises for empty input
        raise ValueError("no certificate in the PEM data")
    return certificates


def load_pem_private_key(data: bytes) -> PrivateKey:
    """An EC or RSA private key from unencrypted PEM."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the private key is neither EC nor RSA")
    return key


# --- helpers -----------------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    start: datetime,
    end: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _key_usage(*, ca: bool, rsa_key: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _common_name(certificate: x509.Certificate) -> str | None:
    values = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _prune(bundle: Sequence[x509.Certificate], now: datetime) -> list[x509.Certificate]:
    """Drop expired and repeated CAs, keep order, cap the size."""
    seen: set[bytes] = set()
    kept: list[x509.Certificate] = []
    for certificate in bundle:
        fingerprint = certificate.fingerprint(hashes.SHA256())
        if fingerprint in seen or certificate.not_valid_after_utc <= now:
            continue
        seen.add(fingerprint)
        kept.append(certificate)
    return kept[:MAX_BUNDLE]


__all__ = [
    "KeyPair",
    "KeyType",
    "WebhookCertificates",
    "create_ca",
    "create_certificates",
    "dns_names",
    "generate_key",
    "issue_serving_certificate",
    "load_pem_certificates",
    "load_pem_private_key",
    "needs_rotation",
    "pem_certificates",
    "pem_private_key",
    "rotate_certificates",
    "service_dns_names",
]
