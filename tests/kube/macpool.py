"""MacPool as real processes (``macpool serve``) beside the test control plane.

:class:`Deployment` is what ``macpool k8s manifests`` renders, applied to the API server the way
a cluster would get it, except that the webhook configuration points at ``clientConfig.url`` on
loopback (there is no Service routing here). :class:`MacPoolProcess` is one ``macpool serve``
(gunicorn, the webhook listener and the reconciler) configured from the rendered Deployment's
environment, with the Service account token and free loopback ports of the test.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from click.testing import CliRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from manager.cli import main as macpool_cli
from manager.db import Database
from tests.kube.controlplane import ControlPlane, free_port

MACPOOL = Path(sys.executable).with_name("macpool")
NAMESPACE = "macpool-system"
SERVICE_ACCOUNT = "macpool"
#: Short timings where the product reads them from the environment.
FAST_ENV = {
    "MACPOOL_K8S_WAIT_TIME": "8",
    "MACPOOL_EXPIRE_INTERVAL": "1",
    "MACPOOL_WORKERS": "1",
    "MACPOOL_THREADS": "8",
    "MACPOOL_LOG_LEVEL": "INFO",
}


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s (last: {last!r})")


def render(*extra: str) -> dict[str, dict[str, Any]]:
    """``macpool k8s manifests -o json`` for the test namespace, by ``kind/name``."""
    result = CliRunner().invoke(
        macpool_cli,
        ["k8s", "manifests", "--image", "macpool:test", "--namespace", NAMESPACE, "-o", "json",
         *extra],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    items = json.loads(result.output)["items"]
    return {f"{item['kind']}/{item['metadata']['name']}": item for item in items}


def webhook_configuration_for(rendered: dict[str, dict[str, Any]], port: int) -> dict[str, Any]:
    """The rendered MutatingWebhookConfiguration, each webhook's Service swapped for a loopback
    URL with the same path (everything else, selectors and policies included, as rendered)."""
    (manifest,) = [m for m in rendered.values() if m["kind"] == "MutatingWebhookConfiguration"]
    manifest = copy.deepcopy(manifest)
    for webhook in manifest["webhooks"]:
        service = webhook["clientConfig"].pop("service")
        webhook["clientConfig"]["url"] = f"https://127.0.0.1:{port}{service['path']}"
    return manifest


class Deployment:
    """The rendered manifests on the test API server; MacPool runs as their ServiceAccount."""

    def __init__(self, control_plane: ControlPlane, api: client.ApiClient) -> None:
        self.control_plane = control_plane
        self.api = api
        self.rendered = render("--ca-bundle", str(control_plane.ca_file))

    @property
    def container_env(self) -> dict[str, str]:
        """The plain ``value`` variables of the rendered Deployment's container."""
        deployment = self.rendered[f"Deployment/{SERVICE_ACCOUNT}"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e["value"] for e in container["env"] if "value" in e}

    def apply_namespace(self) -> None:
        core = client.CoreV1Api(self.api)
        with contextlib.suppress(ApiException):
            core.create_namespace(self.rendered[f"Namespace/{NAMESPACE}"])
        wait_for(lambda: _exists(core.read_namespace, NAMESPACE), what="MacPool's namespace")

    def apply_access(self) -> None:
        """The ServiceAccount and the rendered RBAC (namespace first)."""
        core = client.CoreV1Api(self.api)
        rbac = client.RbacAuthorizationV1Api(self.api)
        creators = {
            "ServiceAccount": lambda b: core.create_namespaced_service_account(NAMESPACE, b),
            "ClusterRole": rbac.create_cluster_role,
            "ClusterRoleBinding": rbac.create_cluster_role_binding,
            "Role": lambda b: rbac.create_namespaced_role(NAMESPACE, b),
            "RoleBinding": lambda b: rbac.create_namespaced_role_binding(NAMESPACE, b),
        }
        for manifest in self.rendered.values():
            create = creators.get(manifest["kind"])
            if create is None:
                continue
            try:
                create(manifest)
            except ApiException as exc:
                if exc.status != 409:
                    raise

    def remove_access(self) -> None:
        """Delete the rendered RBAC (the ServiceAccount stays)."""
        rbac = client.RbacAuthorizationV1Api(self.api)
        for call in (
            lambda: rbac.delete_cluster_role_binding(SERVICE_ACCOUNT),
            lambda: rbac.delete_cluster_role(SERVICE_ACCOUNT),
            lambda: rbac.delete_namespaced_role_binding(SERVICE_ACCOUNT, NAMESPACE),
            lambda: rbac.delete_namespaced_role(SERVICE_ACCOUNT, NAMESPACE),
        ):
            with contextlib.suppress(ApiException):
                call()

    def service_account_kubeconfig(
        self, path: Path, *, account: str = SERVICE_ACCOUNT, server: str | None = None
    ) -> Path:
        """A kubeconfig with a fresh token of a ServiceAccount of MacPool's namespace
        (TokenRequest API), for the API server or ``server`` (a relay in front of it)."""
        core = client.CoreV1Api(self.api)
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        token = core.create_namespaced_service_account_token(account, NAMESPACE, request)
        return self.control_plane.write_kubeconfig(path, token.status.token, server=server)

    def register_webhook(self, port: int, *, wait: bool = True) -> dict[str, Any]:
        """Create (or replace) the MutatingWebhookConfiguration for a webhook on ``port``; with
        ``wait``, until the API server calls it (it picks configurations up asynchronously)."""
        admission = client.AdmissionregistrationV1Api(self.api)
        manifest = webhook_configuration_for(self.rendered, port)
        self.unregister_webhook()
        admission.create_mutating_webhook_configuration(manifest)
        if wait:
            wait_for(self.webhook_answers, timeout=30, what="the webhook configuration in effect")
        return manifest

    def webhook_answers(self) -> bool:
        """Whether a dry-run VM create in ``default`` comes back with a MAC from the webhook."""
        custom = client.CustomObjectsApi(self.api)
        probe = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "webhook-probe", "namespace": "default"},
            "spec": {
                "template": {
                    "spec": {
                        "domain": {
                            "devices": {"interfaces": [{"name": "default", "masquerade": {}}]}
                        },
                        "networks": [{"name": "default", "pod": {}}],
                    }
                }
            },
        }
        try:
            answer = custom.create_namespaced_custom_object(
                "kubevirt.io", "v1", "default", "virtualmachines", probe, dry_run="All"
            )
        except ApiException:
            return False
        (nic,) = answer["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
        return bool(nic.get("macAddress"))

    def unregister_webhook(self) -> None:
        admission = client.AdmissionregistrationV1Api(self.api)
        name = self.webhook_configuration_name
        with contextlib.suppress(ApiException):
            admission.delete_mutating_webhook_configuration(name)

    @property
    def webhook_configuration_name(self) -> str:
        (name,) = [
            m["metadata"]["name"]
            for m in self.rendered.values()
            if m["kind"] == "MutatingWebhookConfiguration"
        ]
        return name


def _exists(read: Callable[[str], Any], name: str) -> bool:
    try:
        read(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@dataclass
class MacPoolProcess:
    """One ``macpool serve`` with the Kubernetes plugin, started and stopped by the test."""

    deployment: Deployment
    workdir: Path
    database_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    #: The ServiceAccount whose token MacPool uses, and the API server URL (default: direct).
    account: str = SERVICE_ACCOUNT
    api_server: str | None = None
    bind_port: int = field(default_factory=free_port)
    webhook_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _starts: int = 0

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.database_url = self.database_url or f"sqlite:///{self.data_dir / 'macpool.db'}"
        cert, key = self.deployment.control_plane.ca.write_serving(
            self.workdir, "webhook", ips=("127.0.0.1",)
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MACPOOL_")}
        self.env.pop("KUBERNETES_SERVICE_HOST", None)
        self.env.update(self.deployment.container_env)
        self.env.update(
            MACPOOL_PLUGINS="ovirt,kubernetes",
            MACPOOL_DATA_DIR=str(self.data_dir),
            MACPOOL_DATABASE_URL=self.database_url,
            MACPOOL_SECRET_KEY=secrets.token_urlsafe(32),
            MACPOOL_BIND=f"127.0.0.1:{self.bind_port}",
            MACPOOL_WEBHOOK_BIND=f"127.0.0.1:{self.webhook_port}",
            MACPOOL_WEBHOOK_CERT=str(cert),
            MACPOOL_WEBHOOK_KEY=str(key),
            POD_NAMESPACE=NAMESPACE,
            POD_NAME=self.workdir.name,
            KUBECONFIG=str(self.workdir / "kubeconfig"),
            **FAST_ENV,
        )
        self.env.update(self.extra_env)

    @property
    def log_path(self) -> Path:
        return self.workdir / "macpool.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.bind_port}"

    def start(self, *, kubeconfig: bool = True) -> MacPoolProcess:
        """Start ``macpool serve`` (with a fresh ServiceAccount token unless ``kubeconfig`` is
        False: the test wrote ``env["KUBECONFIG"]`` itself)."""
        if kubeconfig:
            self.deployment.service_account_kubeconfig(
                Path(self.env["KUBECONFIG"]), account=self.account, server=self.api_server
            )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(MACPOOL), "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._starts += 1
        return self

    def readyz(self) -> tuple[int, dict[str, Any]]:
        """``GET /readyz``: (status, body); (0, {}) while the port does not answer."""
        try:
            reply = requests.get(f"{self.url}/readyz", timeout=5)
        except requests.RequestException:
            return 0, {}
        return reply.status_code, reply.json()

    def wait_ready(self, timeout: float = 60.0) -> MacPoolProcess:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"macpool serve exited:\n{self.log_tail()}")
            return self.readyz()[0] == 200

        try:
            wait_for(ready, timeout=timeout, what="MacPool ready")
        except AssertionError as exc:
            dumped = self.dump_plugin_stacks()
            raise AssertionError(
                f"{exc}\n{self.readyz()}\n{self.log_tail(160 if dumped else 40)}"
            ) from None
        return self

    def dump_plugin_stacks(self) -> bool:
        """Have every plugin process still running write its threads' stacks to the log
        (SIGUSR1, see manager/plugin_process.py): what a stuck reconciler was waiting on."""
        if self.process is None or self.process.poll() is not None:
            return False
        signalled = False
        for pid in self.pids():
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"manager.plugin_process" in command:
                    os.kill(pid, signal.SIGUSR1)
                    signalled = True
        if signalled:
            time.sleep(1)
        return signalled

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        """The log's last lines, without the access-log lines of the harness's own readiness
        polls (they buried the lines that say why MacPool was not ready)."""
        kept = [line for line in self.log().splitlines() if '"GET /readyz ' not in line]
        return "\n".join(kept[-lines:])

    def stop(self) -> None:
        """SIGTERM to ``macpool serve`` (it stops its children), then its group if anything
        is left after 20 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        self.process = None

    def kill(self) -> None:
        """SIGKILL every process of this MacPool at once (the crash of a pod)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def _reap_group(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def database(self) -> Database:
        return Database(self.database_url)

    def pids(self) -> list[int]:
        """The ids of ``macpool serve`` and every process of its session (its children)."""
        assert self.process is not None
        session = os.getsid(self.process.pid)
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError):
                if os.getsid(int(entry.name)) == session:
                    found.append(int(entry.name))
        return found


@contextlib.contextmanager
def running(process: MacPoolProcess, *, register: bool = True) -> Iterator[MacPoolProcess]:
    """Start, wait until ready, register the webhook; stop and unregister afterwards."""
    process.start().wait_ready()
    if register:
        process.deployment.register_webhook(process.webhook_port)
    try:
        yield process
    finally:
        if register:
            process.deployment.unregister_webhook()
        process.stop()


__all__ = [
    "FAST_ENV",
    "NAMESPACE",
    "SERVICE_ACCOUNT",
    "Deployment",
    "MacPoolProcess",
    "render",
    "running",
    "wait_for",
    "webhook_configuration_for",
]
