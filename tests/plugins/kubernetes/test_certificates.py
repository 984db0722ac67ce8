"""Webhook certificates: chain and SANs, rotation with overlap, storage, TLS reload."""

from __future__ import annotations

import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from plugins.kubernetes.certificates import (
    WebhookCertificates,
    create_certificates,
    dns_names,
    issue_serving_certificate,
    load_pem_certificates,
    load_pem_private_key,
    needs_rotation,
    pem_certificates,
    pem_private_key,
    rotate_certificates,
)
from plugins.kubernetes.certstore import (
    CertificateFiles,
    ca_secret,
    certificate_files,
    certificates_from_secrets,
    load_certificates,
    save_certificates,
    serving_secret,
)

SVC, NS = "macpool-webhook", "macpool-system"
NAMES = [SVC, f"{SVC}.{NS}", f"{SVC}.{NS}.svc", f"{SVC}.{NS}.svc.cluster.local"]
T0 = datetime(2026, 8, 4, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def certs() -> WebhookCertificates:
    return create_certificates(service=SVC, namespace=NS, now=T0)


def verify(
    certs: WebhookCertificates, trusted: list[x509.Certificate], name: str, when: datetime
) -> None:
    verifier = (
        PolicyBuilder().store(Store(trusted)).time(when).build_server_verifier(x509.DNSName(name))
    )
    verifier.verify(certs.serving.certificate, [])


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_serving_certificate_chains_to_the_ca_for_every_service_name(key_type: str) -> None:
    certs = create_certificates(service=SVC, namespace=NS, now=T0, key_type=key_type)  # type: ignore[arg-type]
    assert sorted(dns_names(certs.serving.certificate)) == sorted(NAMES)
    for name in NAMES:
        verify(certs, [certs.ca.certificate], name, T0)
    with pytest.raises(VerificationError):
        verify(certs, [certs.ca.certificate], "other.example.com", T0)
    usage = certs.serving.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage.value
    assert certs.ca_bundle == (certs.ca.certificate,)


def test_other_ca_does_not_verify(certs: WebhookCertificates) -> None:
    other = create_certificates(service=SVC, namespace=NS, now=T0)
    with pytest.raises(VerificationError):
        verify(certs, [other.ca.certificate], NAMES[2], T0)


def test_needs_rotation_window(certs: WebhookCertificates) -> None:
    end = certs.serving.certificate.not_valid_after_utc
    day = timedelta(days=1)
    assert not needs_rotation(certs.serving.certificate, T0, before=day)
    assert not needs_rotation(certs.serving.certificate, end - day - timedelta(seconds=1))
    assert needs_rotation(certs.serving.certificate, end - day, before=day)
    assert needs_rotation(certs.serving.certificate, end + day, before=day)
    assert needs_rotation(certs.serving.certificate, T0 - timedelta(days=1), before=day)


def test_nothing_due_returns_the_same_set(certs: WebhookCertificates) -> None:
    assert rotate_certificates(certs, service=SVC, namespace=NS, now=T0) is certs


def test_serving_rotation_keeps_the_ca(certs: WebhookCertificates) -> None:
    later = certs.serving.certificate.not_valid_after_utc - timedelta(hours=1)
    rotated = rotate_certificates(certs, service=SVC, namespace=NS, now=later)
    assert rotated.ca is certs.ca and rotated.ca_bundle == certs.ca_bundle
    assert rotated.serving.certificate.serial_number != certs.serving.certificate.serial_number
    verify(rotated, [certs.ca.certificate], NAMES[3], later)


def test_ca_rotation_overlaps_with_the_old_ca(certs: WebhookCertificates) -> None:
    later = certs.ca.certificate.not_valid_after_utc - timedelta(hours=12)
    rotated = rotate_certificates(certs, service=SVC, namespace=NS, now=later)
    assert rotated.ca.certificate != certs.ca.certificate
    assert rotated.ca_bundle == (rotated.ca.certificate, certs.ca.certificate)
    # During the overlap, serving certs of the old and of the new CA both verify.
    verify(rotated, list(rotated.ca_bundle), NAMES[2], later)
    old_serving = issue_serving_certificate(certs.ca, service=SVC, namespace=NS, now=later)
    old_signed = WebhookCertificates(ca=certs.ca, serving=old_serving, ca_bundle=())
    verify(old_signed, list(rotated.ca_bundle), NAMES[2], later)
    with pytest.raises(VerificationError):
        verify(old_signed, [rotated.ca.certificate], NAMES[2], later)
    # Once the old CA expired, the next rotation pass drops it from the bundle.
    after = certs.ca.certificate.not_valid_after_utc + timedelta(seconds=1)
    pruned = rotate_certificates(rotated, service=SVC, namespace=NS, now=after)
    assert pruned.ca_bundle == (rotated.ca.certificate,)
    assert pruned.ca is rotated.ca


def test_renamed_service_gets_a_new_serving_certificate(certs: WebhookCertificates) -> None:
    rotated = rotate_certificates(certs, service="renamed", namespace=NS, now=T0)
    assert f"renamed.{NS}.svc" in dns_names(rotated.serving.certificate)
    assert rotated.ca is certs.ca


def test_pem_round_trip(certs: WebhookCertificates) -> None:
    bundle = pem_certificates([certs.ca.certificate, certs.serving.certificate])
    assert load_pem_certificates(bundle) == [certs.ca.certificate, certs.serving.certificate]
    key = load_pem_private_key(pem_private_key(certs.serving.key))
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*public) == (
        certs.serving.key.public_key().public_bytes(*public)
    )
    with pytest.raises(ValueError):
        load_pem_certificates(b"garbage")


def test_directory_store_round_trip(tmp_path: Path, certs: WebhookCertificates) -> None:
    assert load_certificates(tmp_path) is None
    save_certificates(tmp_path, certs)
    loaded = load_certificates(tmp_path)
    assert loaded is not None and certificate_files(loaded) == certificate_files(certs)
    assert (tmp_path / "tls.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca-bundle.crt",
        "ca.crt",
        "ca.key",
        "tls.crt",
        "tls.key",
    ]


def test_secret_round_trip(certs: WebhookCertificates) -> None:
    labels = {"app.kubernetes.io/name": "macpool"}
    ca = ca_secret(certs, name="macpool-webhook-ca", namespace=NS, labels=labels)
    tls = serving_secret(certs, name="macpool-webhook-tls", namespace=NS, labels=labels)
    assert ca["type"] == "Opaque" and sorted(ca["data"]) == ["ca-bundle.crt", "ca.crt", "ca.key"]
    assert tls["type"] == "kubernetes.io/tls"
    assert sorted(tls["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert tls["metadata"] == {"name": "macpool-webhook-tls", "namespace": NS, "labels": labels}
    assert certificate_files(certificates_from_secrets(ca, tls)) == certificate_files(certs)


# --- TLS context reload ------------------------------------------------------------------------


def handshake(server_context: ssl.SSLContext, ca_pem: bytes, name: str) -> x509.Certificate:
    """A full in-memory TLS handshake; returns the certificate the server presented."""
    client_context = ssl.create_default_context(cadata=ca_pem.decode())
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(client_in, client_out, server_hostname=name)
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_certificate_files_reload_when_changed(tmp_path: Path) -> None:
    # Real time here: the client checks validity against the wall clock.
    certs = create_certificates(service=SVC, namespace=NS)
    save_certificates(tmp_path, certs)
    now = [0.0]
    files = CertificateFiles(
        tmp_path / "tls.crt", tmp_path / "tls.key", check_interval=10, clock=lambda: now[0]
    )
    first = files.context()
    assert handshake(first, certs.ca_bundle_pem, NAMES[2]) == certs.serving.certificate

    rotated = rotate_certificates(certs, service=SVC, namespace=NS, ca_before=timedelta(days=999))
    assert rotated.ca_bundle == (rotated.ca.certificate, certs.ca.certificate)
    save_certificates(tmp_path, rotated)
    assert files.context() is first  # not checked again before the interval
    now[0] = 10.0
    second = files.context()
    assert second is not first and files.reloads == 1
    presented = handshake(second, rotated.ca_bundle_pem, NAMES[2])
    assert presented == rotated.serving.certificate
    # The old context still works for connections that already use it.
    assert handshake(first, rotated.ca_bundle_pem, NAMES[2]) == certs.serving.certificate
    now[0] = 20.0
    assert files.context() is second  # unchanged files: no rebuild


def test_certificate_files_keep_old_context_on_broken_pair(
    tmp_path: Path, certs: WebhookCertificates
) -> None:
    save_certificates(tmp_path, certs)
    files = CertificateFiles(tmp_path / "tls.crt", tmp_path / "tls.key", check_interval=0)
    first = files.context()
    other = create_certificates(service=SVC, namespace=NS, now=T0)
    (tmp_path / "tls.key").write_bytes(pem_private_key(other.serving.key))  # mismatched key
    assert files.context() is first and files.reloads == 0
    os.remove(tmp_path / "tls.crt")
    assert files.reload_if_changed() is False
    save_certificates(tmp_path, other)
    assert files.reload_if_changed() is True
