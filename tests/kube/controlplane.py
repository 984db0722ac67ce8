"""A real control plane on loopback: Debian's etcd and the kube-apiserver from ``../shared/k8s``.

Used by the ``kube`` test tier and by ``bench/bench_apiserver.py``. Everything it needs is made
per run: the binary is unpacked into a cache directory (never the repository), the CA and the
certificates are generated with ``cryptography``, and both servers listen on free loopback ports.
Stop order matters: the API server first, then etcd.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import lzma
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO.parent / "shared" / "k8s"
APISERVER_XZ = K8S_DIR / "kube-apiserver-v1.24.0.xz"
APISERVER_SHA256 = "80c48e20e037cfb78029e10bc93b6ed23bf1445eead81a17b7af06fe3be675e9"
ETCD = Path(os.environ.get("MACPOOL_TEST_ETCD", "/usr/bin/etcd"))
ADMIN_TOKEN_USER = "admin"

VM_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "virtualmachines.kubevirt.io"},
    "spec": {
        "group": "kubevirt.io",
        "scope": "Namespaced",
        "names": {
            "plural": "virtualmachines",
            "singular": "virtualmachine",
            "kind": "VirtualMachine",
            "shortNames": ["vm", "vms"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
                "subresources": {"status": {}},
            }
        ],
    },
}


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the control plane (empty when it can)."""
    missing = []
    if not (ETCD.is_file() and os.access(ETCD, os.X_OK)):
        missing.append(f"{ETCD} (Debian package etcd-server)")
    if not APISERVER_XZ.is_file():
        missing.append(f"{APISERVER_XZ}")
    return missing


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "macpool"


def apiserver_binary() -> Path:
    """The unpacked, verified binary (unpacked once into the cache directory)."""
    target = cache_dir() / f"kube-apiserver-{APISERVER_SHA256[:16]}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")
    digest = hashlib.sha256()
    with lzma.open(APISERVER_XZ) as source, partial.open("wb") as sink:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            sink.write(chunk)
    if digest.hexdigest() != APISERVER_SHA256:
        partial.unlink()
        raise RuntimeError(f"{APISERVER_XZ} does not unpack to the binary its README describes")
    partial.chmod(0o755)
    partial.replace(target)  # atomic: a concurrent run sees the whole file or none
    return target


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class LoopbackCA:
    """A throwaway CA for the API server's and the webhooks' serving certificates."""

    def __init__(self, common_name: str = "macpool-test-ca") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC) - timedelta(minutes=5)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, common_name: str, *, ips: Sequence[str] = ("127.0.0.1",), dns: Sequence[str] = ()
    ) -> Issued:
        """A serving certificate for ``ips`` and ``dns`` names."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC) - timedelta(minutes=5)
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.DNSName(name) for name in dns]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def write_serving(self, directory: Path, stem: str, **kwargs: Any) -> tuple[Path, Path]:
        """Issue a serving certificate into ``stem.crt``/``stem.key``; return both paths."""
        issued = self.issue(stem, **kwargs)
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        key.chmod(0o600)
        return cert, key


# --- the control plane ---------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """etcd + kube-apiserver on loopback, started with :meth:`start`, ended with :meth:`stop`."""

    workdir: Path
    authorization_mode: str = "AlwaysAllow"
    extra_flags: Sequence[str] = ()
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    etcd_port: int = 0
    api_port: int = 0
    ca: LoopbackCA = field(default_factory=LoopbackCA)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def start(self, *, timeout: float = 90.0) -> ControlPlane:
        """Generate the certificates, start etcd and the API server, wait for ``/readyz``."""
        binary = apiserver_binary()
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self.ca_file.write_bytes(self.ca.cert_pem)
        self.ca.write_serving(pki, "apiserver", ips=("127.0.0.1",), dns=("localhost",))
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (pki / "sa.key").write_bytes(_key_pem(sa_key))
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        (pki / "tokens.csv").write_text(
            f"{self.token},{ADMIN_TOKEN_USER},admin-uid,system:masters\n"
        )
        self.etcd_port, peer_port = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(ETCD), "--name", "t", "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-cluster", f"t=http://127.0.0.1:{peer_port}",
                "--log-level", "warn",
            ],
        )  # fmt: skip
        self._wait(lambda: requests.get(f"{self.etcd_url}/health", timeout=2).ok, "etcd", 30)
        self.api_port = free_port()
        self.write_kubeconfig(self.kubeconfig, self.token)
        self._spawn(
            "kube-apiserver",
            [
                str(binary), f"--etcd-servers={self.etcd_url}", "--bind-address=127.0.0.1",
                f"--secure-port={self.api_port}", "--advertise-address=127.0.0.1",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}", f"--token-auth-file={pki / 'tokens.csv'}",
                f"--authorization-mode={self.authorization_mode}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
                *self.extra_flags,
            ],
        )  # fmt: skip
        self._wait(self._api_ready, "kube-apiserver", timeout)
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def _api_ready(self) -> bool:
        reply = requests.get(
            f"{self.url}/readyz", headers=self.auth_headers, verify=str(self.ca_file), timeout=3
        )
        return reply.status_code == 200

    def _wait(self, ready: Any, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}:\n{self.log_tail(name)}"
                )
            with contextlib.suppress(requests.RequestException):
                if ready():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def write_kubeconfig(self, path: Path, token: str, *, server: str | None = None) -> Path:
        """A kubeconfig (JSON is YAML) for ``token`` against this API server (or ``server``)."""
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": server or self.url,
                        "certificate-authority-data": base64.b64encode(self.ca.cert_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
            "current-context": "test",
        }
        path.write_text(json.dumps(document, indent=2))
        path.chmod(0o600)
        return path

    def stop(self) -> None:
        """Stop the API server, then etcd (SIGTERM, then SIGKILL after 15 s)."""
        for name in ("kube-apiserver", "etcd"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    # --- etcd's JSON gateway ---------------------------------------------------------------

    def etcd_revision(self) -> int:
        """The current revision of etcd (every write of the API server raises it)."""
        key = base64.b64encode(b"/").decode()
        reply = requests.post(f"{self.etcd_url}/v3/kv/range", json={"key": key}, timeout=5)
        reply.raise_for_status()
        return int(reply.json()["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd's history up to now: older resourceVersions become 410 Gone."""
        revision = self.etcd_revision()
        reply = requests.post(
            f"{self.etcd_url}/v3/kv/compaction",
            json={"revision": str(revision), "physical": True},
            timeout=30,
        )
        reply.raise_for_status()
        return revision


__all__ = [
    "VM_CRD",
    "ControlPlane",
    "LoopbackCA",
    "apiserver_binary",
    "free_port",
    "missing_prerequisites",
]
