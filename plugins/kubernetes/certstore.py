"""Where the webhook certificates live: a directory, Kubernetes Secrets, and the TLS context.

The data directory holds ``ca.crt``/``ca.key`` (current CA), ``ca-bundle.crt`` (what the API
server trusts) and ``tls.crt``/``tls.key`` (serving). Secrets use the same keys, so a Secret
mounted as a volume is a valid directory. :class:`CertificateFiles` watches the serving pair
(ours or an external one such as cert-manager's) and hands out a fresh ``ssl.SSLContext`` when
the files change, so the listener can use the new context for new connections without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from plugins.kubernetes.certificates import (
    KeyPair,
    WebhookCertificates,
    load_pem_certificates,
    load_pem_private_key,
    pem_certificates,
    pem_private_key,
)

CA_CERT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
CA_BUNDLE: Final = "ca-bundle.crt"
TLS_CERT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"


def certificate_files(certificates: WebhookCertificates) -> dict[str, bytes]:
    """File name → content of the certificate set."""
    return {
        CA_CERT: pem_certificates([certificates.ca.certificate]),
        CA_KEY: pem_private_key(certificates.ca.key),
        CA_BUNDLE: certificates.ca_bundle_pem,
        TLS_CERT: pem_certificates([certificates.serving.certificate]),
        TLS_KEY: pem_private_key(certificates.serving.key),
    }


def certificates_from_files(files: Mapping[str, bytes]) -> WebhookCertificates:
    """Rebuild the set from file contents; raises ValueError (or KeyError) when incomplete."""
    ca_certificate = load_pem_certificates(files[CA_CERT])[0]
    bundle = load_pem_certificates(files[CA_BUNDLE]) if files.get(CA_BUNDLE) else [ca_certificate]
    return WebhookCertificates(
        ca=KeyPair(ca_certificate, load_pem_private_key(files[CA_KEY])),
        serving=KeyPair(
            load_pem_certificates(files[TLS_CERT])[0], load_pem_private_key(files[TLS_KEY])
        ),
        ca_bundle=tuple(bundle),
    )


def save_certificates(directory: Path, certificates: WebhookCertificates) -> None:
    """Write the set atomically file by file; private keys are mode 0600.

    The key is written before the certificate so a watcher never pairs a new certificate with
    an old key for longer than one poll (and :class:`CertificateFiles` retries on mismatch).
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = certificate_files(certificates)
    for name in (CA_KEY, CA_CERT, CA_BUNDLE, TLS_KEY, TLS_CERT):
        _write_atomically(directory / name, files[name], private=name.endswith(".key"))


def load_certificates(directory: Path) -> WebhookCertificates | None:
    """The stored set, or ``None`` when the directory holds none (first start)."""
    names = (CA_CERT, CA_KEY, CA_BUNDLE, TLS_CERT, TLS_KEY)
    if not all((directory / name).is_file() for name in names):
        return None
    return certificates_from_files({name: (directory / name).read_bytes() for name in names})


def _write_atomically(path: Path, content: bytes, *, private: bool) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, 0o600 if private else 0o644)
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- Kubernetes Secrets ------------------------------------------------------------------------


def ca_secret(
    certificates: WebhookCertificates, *, name: str, namespace: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The Opaque Secret holding the CA and the bundle."""
    files = certificate_files(certificates)
    data = {key: files[key] for key in (CA_CERT, CA_KEY, CA_BUNDLE)}
    return _secret(name=name, namespace=namespace, labels=labels, kind="Opaque", data=data)


def serving_secret(
    certificates: WebhookCertificates, *, name: str, namespace: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The ``kubernetes.io/tls`` Secret holding the serving pair (and ``ca.crt`` for clients)."""
    files = certificate_files(certificates)
    data = {key: files[key] for key in (TLS_CERT, TLS_KEY)}
    data[CA_CERT] = files[CA_BUNDLE]
    return _secret(
        name=name, namespace=namespace, labels=labels, kind="kubernetes.io/tls", data=data
    )


def certificates_from_secrets(
    ca: Mapping[str, Any], serving: Mapping[str, Any]
) -> WebhookCertificates:
    """Rebuild the set from the two Secrets (as dicts, ``data`` base64-encoded)."""
    files: dict[str, bytes] = {}
    for secret, keys in ((ca, (CA_CERT, CA_KEY, CA_BUNDLE)), (serving, (TLS_CERT, TLS_KEY))):
        data = secret.get("data") or {}
        for key in keys:
            if key in data:
                files[key] = base64.b64decode(data[key], validate=True)
    return certificates_from_files(files)


def _secret(
    *, name: str, namespace: str, labels: Mapping[str, str], kind: str, data: Mapping[str, bytes]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "type": kind,
        "data": {key: base64.b64encode(value).decode("ascii") for key, value in data.items()},
    }


# --- the listener's TLS context ----------------------------------------------------------------


class CertificateFiles:
    """An ``ssl.SSLContext`` for a certificate/key file pair, rebuilt when the files change.

    :meth:`context` is cheap: at most every ``check_interval`` seconds it hashes the two files
    and, when their content changed, builds a new context. Connections already established keep
    the old one; if the new pair cannot be loaded (e.g. caught between the two writes) the old
    context stays in use and the next check tries again.
    """

    def __init__(
        self,
        cert_path: Path,
        key_path: Path,
        *,
        check_interval: float = 5.0,
        minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self.check_interval = check_interval
        self.minimum_version = minimum_version
        self._clock = clock
        self._lock = threading.Lock()
        self._digest = self._read_digest()
        self._context = self._build()
        self._checked_at = clock()
        self.reloads = 0

    def context(self) -> ssl.SSLContext:
        """The current context, reloading first when the check interval has passed."""
        if self._clock() - self._checked_at >= self.check_interval:
            self.reload_if_changed()
        return self._context

    def reload_if_changed(self) -> bool:
        """Check the files now; True when a new context was built."""
        with self._lock:
            self._checked_at = self._clock()
            digest = self._read_digest()
            if digest == self._digest:
                return False
            try:
                context = self._build()
            except (OSError, ssl.SSLError, ValueError):
                return False  # half-written pair: keep serving with the old context
            self._context, self._digest = context, digest
            self.reloads += 1
            return True

    def _read_digest(self) -> bytes:
        digest = hashlib.sha256()
        for path in (self.cert_path, self.key_path):
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"\0missing")
        return digest.digest()

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.minimum_version
        context.load_cert_chain(certfile=self.cert_path, keyfile=self.key_path)
        return context


__all__ = [
    "CertificateFiles",
    "ca_secret",
    "certificate_files",
    "certificates_from_files",
    "certificates_from_secrets",
    "load_certificates",
    "save_certificates",
    "serving_secret",
]
