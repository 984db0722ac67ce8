"""``macpool k8s …``: deployment manifests, webhook certificates, and the webhook listener alone."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

import click

from manager.cli_support import CliContext, emit, handle_errors, json_option, pass_ctx
from manager.config import ConfigError
from plugins.kubernetes.scoping import parse_opt_mode


def _opt_mode(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return parse_opt_mode(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group("k8s")
def k8s() -> None:
    """Kubernetes plugin: manifests, certificates, webhook listener."""


@k8s.command("manifests")
@click.option("--namespace", default="macpool-system", show_default=True)
@click.option("--image", required=True, help="Container image of MacPool.")
@click.option("--replicas", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--vm-mode", default="opt-out", show_default=True, callback=_opt_mode)
@click.option("--pod-mode", default="opt-in", show_default=True, callback=_opt_mode)
@click.option("--database-secret", default="macpool-database", show_default=True)
@click.option("--database-secret-key", default="url", show_default=True)
@click.option(
    "--session-key-secret",
    default="macpool-database",
    show_default=True,
    help="Secret holding the UI session signing key that every replica shares.",
)
@click.option("--session-key-secret-key", default="session-key", show_default=True)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM file the serving certificate chains to (external certificates only).",
)
@click.option("--service", default="macpool-webhook", show_default=True)
@click.option("--cluster-scope", default="/kubernetes", show_default=True)
@click.option(
    "--failure-policy", type=click.Choice(["Fail", "Ignore"]), default="Fail", show_default=True
)
@click.option("--timeout", type=click.IntRange(1, 30), default=10, show_default=True)
@click.option("--wait-time", type=click.IntRange(min=1), default=300, show_default=True)
@click.option(
    "--output", "-o", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
@handle_errors
def manifests(
    namespace: str,
    image: str,
    replicas: int,
    vm_mode: str,
    pod_mode: str,
    database_secret: str,
    database_secret_key: str,
    session_key_secret: str,
    session_key_secret_key: str,
    ca_bundle: Path | None,
    service: str,
    cluster_scope: str,
    failure_policy: str,
    timeout: int,
    wait_time: int,
    output: str,
) -> None:
    """Print a complete deployment for `kubectl apply -f -`."""
    from plugins.kubernetes.manifests import dump_manifests, render_manifests

    if not cluster_scope.startswith("/"):
        raise ConfigError("--cluster-scope must be a scope path such as /kubernetes.")
    try:
        rendered = render_manifests(
            namespace=namespace,
            image=image,
            replicas=replicas,
            vm_mode=parse_opt_mode(vm_mode),
            pod_mode=parse_opt_mode(pod_mode),
            database_secret=database_secret,
            database_secret_key=database_secret_key,
            session_key_secret=session_key_secret,
            session_key_secret_key=session_key_secret_key,
            ca_bundle=ca_bundle.read_bytes() if ca_bundle else None,
            service=service,
            cluster_scope=cluster_scope,
            failure_policy=cast(Literal["Fail", "Ignore"], failure_policy),
            timeout_seconds=timeout,
            wait_time=wait_time,
        )
        text = dump_manifests(rendered, output=cast(Literal["yaml", "json"], output))
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(str(exc)) from None
    click.echo(text, nl=False)


@k8s.command("certs")
@json_option
@pass_ctx
@handle_errors
def certs(ctx: CliContext, as_json: bool) -> None:
    """Create or rotate MacPool's own webhook certificates in the data directory."""
    from plugins.kubernetes.certificates import dns_names
    from plugins.kubernetes.certsetup import refresh_certificates, serving_files

    files = serving_files(ctx.settings)
    data: dict[str, object] = {"cert": str(files.cert), "key": str(files.key)}
    data["managed"] = files.managed
    if files.managed:
        current = refresh_certificates(ctx.settings)
        data["dns_names"] = dns_names(current.serving.certificate)
        data["not_after"] = current.serving.certificate.not_valid_after_utc.isoformat()
        data["ca_bundle"] = current.ca_bundle_pem.decode("ascii")
    emit(data, as_json=as_json, text=_certs_text)


def _certs_text(data: dict[str, object]) -> str:
    lines = [f"certificate: {data['cert']}", f"key: {data['key']}"]
    if data["managed"]:
        names = data.get("dns_names")
        assert isinstance(names, list)
        lines += [f"names: {', '.join(names)}", f"expires: {data['not_after']}"]
    else:
        lines.append("(external files from MACPOOL_WEBHOOK_CERT/KEY)")
    return "\n".join(lines)


@k8s.command("webhook")
@click.option(
    "--cert-check-interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between checks of the certificate files for a change.",
)
@pass_ctx
@handle_errors
def webhook(ctx: CliContext, cert_check_interval: float) -> None:
    """Migrate, then serve only the HTTPS admission webhook (MACPOOL_WEBHOOK_BIND)."""
    from manager.startup import prepare
    from plugins.kubernetes.runtime import run_webhook_process

    prepare(ctx.settings, echo=click.echo)
    run_webhook_process(ctx.settings, check_interval=cert_check_interval)


__all__ = ["k8s"]
