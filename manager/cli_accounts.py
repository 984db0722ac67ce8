"""Access: ``macpool token`` (API bearer tokens) and ``macpool user`` (admin UI accounts)."""

from __future__ import annotations

import sys

import click

from manager.cli_support import CliContext, emit, handle_errors, json_option, pass_ctx, table
from manager.services import auth as auth_services


@click.group()
def token() -> None:
    """API bearer tokens (shown once, stored hashed)."""


@token.command("create")
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice(auth_services.ROLES))
@json_option
@pass_ctx
@handle_errors
def token_create(ctx: CliContext, name: str, role: str, as_json: bool) -> None:
    """Create a token; its value is printed once."""
    with ctx.session(write=True) as session:
        created, plaintext = auth_services.create_token(session, ctx.actor, name=name, role=role)
        data = {"token": plaintext, "name": created.name, "role": created.role, "id": created.id}
    emit(
        data,
        as_json=as_json,
        text=lambda d: (
            f"{d['token']}\n(token '{d['name']}', role "
            f"{d['role']}: store it now, it is not shown again)"
        ),
    )


@token.command("list")
@json_option
@pass_ctx
@handle_errors
def token_list(ctx: CliContext, as_json: bool) -> None:
    """List tokens (never their values)."""
    with ctx.session() as session:
        data = [
            {
                "id": t.id,
                "name": t.name,
                "role": t.role,
                "prefix": t.prefix,
                "created_at": t.created_at.isoformat(),
                "revoked": t.revoked_at is not None,
            }
            for t in auth_services.list_tokens(session)
        ]
    emit(
        data,
        as_json=as_json,
        text=lambda rows: table(
            [
                [
                    r["id"],
                    r["name"],
                    r["role"],
                    r["prefix"] + "…",
                    "revoked" if r["revoked"] else "active",
                ]
                for r in rows
            ],
            ["ID", "NAME", "ROLE", "PREFIX", "STATUS"],
        ),
    )


@token.command("revoke")
@click.argument("name")
@pass_ctx
@handle_errors
def token_revoke(ctx: CliContext, name: str) -> None:
    """Revoke a token by name."""
    with ctx.session(write=True) as session:
        auth_services.revoke_token(session, ctx.actor, name)
    click.echo(f"Revoked token '{name}'.")


@click.group()
def user() -> None:
    """Admin UI accounts."""


@user.command("create")
@click.option("--username", required=True)
@click.option("--role", required=True, type=click.Choice(auth_services.ROLES))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@json_option
@pass_ctx
@handle_errors
def user_create(
    ctx: CliContext, username: str, role: str, password_stdin: bool, as_json: bool
) -> None:
    """Create an account (the password is asked for, or read from stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with ctx.session(write=True) as session:
        created = auth_services.create_user(
            session, ctx.actor, username=username, role=role, password=password
        )
        data = {"id": created.id, "username": created.username, "role": created.role}
    emit(data, as_json=as_json, text=lambda d: f"Created user '{d['username']}' ({d['role']}).")


@user.command("list")
@json_option
@pass_ctx
@handle_errors
def user_list(ctx: CliContext, as_json: bool) -> None:
    """List accounts."""
    with ctx.session() as session:
        data = [
            {"id": u.id, "username": u.username, "role": u.role, "disabled": u.disabled}
            for u in auth_services.list_users(session)
        ]
    emit(
        data,
        as_json=as_json,
        text=lambda rows: table(
            [
                [r["id"], r["username"], r["role"], "disabled" if r["disabled"] else "active"]
                for r in rows
            ],
            ["ID", "USERNAME", "ROLE", "STATUS"],
        ),
    )


__all__ = ["token", "user"]
