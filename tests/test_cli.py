"""The ``macpool`` command through click's CliRunner, with its data directory in tmp_path."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from manager.cli import main

Run = Callable[..., Result]
DEFAULT = "02:00:00:00:00:00-02:00:00:ff:ff:ff"
LAB = "0a:00:00:00:00:00-0a:00:00:00:00:0f"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Invoke ``macpool`` with a fresh data directory; asserts the expected exit code."""
    for name in ("MACPOOL_DATABASE_URL", "MACPOOL_CONFIG", "MACPOOL_BIND"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "MACPOOL_DATA_DIR": str(tmp_path / "data"),
        "MACPOOL_PLUGINS": "",
        "MACPOOL_DEFAULT_RANGE": DEFAULT,
    }
    runner = CliRunner()

    def invoke(*args: str, code: int = 0, stdin: str | None = None, **extra: str) -> Result:
        result = runner.invoke(main, list(args), input=stdin, env=env | extra)
        assert result.exit_code == code, (result.output, result.stderr, result.exception)
        if code:
            assert "Traceback" not in result.output
            lines = result.stderr.strip().splitlines()
            assert lines and lines[-1].startswith("Error: "), result.stderr
            # click's own usage errors (exit 2) show the usage first; ours are one line.
            assert len(lines) == 1 or (code == 2 and lines[0].startswith("Usage:")), lines
        return result

    return invoke


def _json(result: Result) -> Any:
    return json.loads(result.stdout)


def test_db_upgrade_creates_default_pool_and_admin(run: Run, tmp_path: Path) -> None:
    first = run("db", "upgrade")
    assert f"Created the default pool 'Default' ({DEFAULT})" in first.output
    assert "Created the admin account 'admin'" in first.output
    password_file = tmp_path / "data" / "initial-admin-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password_file.read_text().strip() in first.output
    again = run("db", "upgrade")
    assert "Created" not in again.output and "Database at revision" in again.output


def test_pool_commands(run: Run) -> None:
    run("db", "upgrade")
    created = _json(run("pool", "create", "--name", "Lab", "--range", LAB, "--json"))
    assert created["name"] == "Lab" and created["statistics"]["size"] == 16
    text = run("pool", "show", "lab").output
    assert "Pool " in text and "0a:00:00:00:00:00 - 0a:00:00:00:00:0f  (16 MACs)" in text
    listing = run("pool", "list").output.splitlines()
    assert listing[0].split() == [
        "ID",
        "NAME",
        "RANGES",
        "SIZE",
        "ALLOCATED",
        "AVAILABLE",
        "DUPLICATES",
        "OK",
    ]
    assert any(line.split()[1:3] == ["Default", "*"] for line in listing[1:])
    assert [p["name"] for p in _json(run("pool", "list", "--json"))] == ["Default", "Lab"]
    updated = _json(
        run("pool", "update", "Lab", "--allow-duplicates", "--description", "lab", "--json")
    )
    assert updated["allow_duplicates"] is True and updated["description"] == "lab"
    err = run(
        "pool",
        "create",
        "--name",
        "Clash",
        "--range",
        "0a:00:00:00:00:08-0a:00:00:00:00:20",
        code=1,
    )
    assert "'Lab'" in err.stderr and LAB in err.stderr
    run("pool", "delete", "Default", code=1)
    assert "Deleted pool 'Lab'." in run("pool", "delete", str(created["id"])).output
    assert "no pool named 'Lab'" in run("pool", "show", "Lab", code=1).stderr


def test_scope_and_allocation_commands(run: Run) -> None:
    run("db", "upgrade")
    run("pool", "create", "--name", "Lab", "--range", LAB)
    dc = _json(
        run("scope", "create", "--kind", "datacenter", "--name", "dc1", "--pool", "Lab", "--json")
    )
    assert dc["path"] == "/dc1" and dc["effective_pool"] == "Lab"
    run("scope", "create", "--kind", "cluster", "--name", "c1", "--parent", "/dc1")
    shown = run("scope", "show", "/dc1/c1").output
    assert "/dc1/c1  [cluster]" in shown and "inherited from /dc1" in shown
    assert [s["path"] for s in _json(run("scope", "list", "--json"))] == ["/", "/dc1", "/dc1/c1"]

    got = _json(
        run(
            "allocate",
            "--scope",
            "/dc1/c1",
            "--owner-kind",
            "vm",
            "--owner-name",
            "web",
            "--interface",
            "nic0",
            "--json",
        )
    )
    assert got["created"] is True and got["pool"] == "Lab" and got["mac"].startswith("0a:")
    again = _json(
        run(
            "allocate",
            "--scope",
            "/dc1/c1",
            "--owner-kind",
            "vm",
            "--owner-name",
            "web",
            "--interface",
            "nic0",
            "--json",
        )
    )
    assert (again["created"], again["mac"]) == (False, got["mac"])
    text = run(
        "allocate",
        "--scope",
        "/dc1/c1",
        "--owner-name",
        "r1",
        "--interface",
        "n",
        "--mac",
        "0e:00:00:00:00:01",
        "--reserve",
    ).output
    assert text.startswith("0e:00:00:00:00:01  reserved (outside the pool's ranges)")
    pending = _json(
        run(
            "allocate",
            "--scope",
            "/dc1/c1",
            "--owner-name",
            "p",
            "--interface",
            "n",
            "--ttl",
            "60",
            "--json",
        )
    )
    assert pending["state"] == "pending" and pending["expires_at"]
    assert _json(run("confirm", str(pending["id"]), "--json"))["state"] == "allocated"

    listing = _json(run("allocations", "--scope", "/dc1/c1", "--json"))
    assert listing["total"] == 3
    assert "vm/web" in run("allocations", "--pool", "Lab").output
    info = _json(run("mac", got["mac"], "--json"))
    assert info["pool"] == "Lab" and [h["id"] for h in info["holders"]] == [got["id"]]
    assert "in pool 'Lab'; 1 holder(s)" in run("mac", got["mac"].upper()).output

    run("scope", "delete", "/dc1/c1", code=1)
    released = run("release", str(got["id"])).output
    assert released.strip() == f"Released {got['mac']} from vm 'web' interface 'nic0'."
    run("release", str(got["id"]), code=1)
    moved = _json(run("scope", "move", "/dc1/c1", "--parent", "/", "--json"))
    assert moved["path"] == "/c1" and moved["effective_pool"] == "Default"
    assigned = _json(run("scope", "assign", "/c1", "--pool", "Lab", "--json"))
    assert assigned["pool_id"] == dc["pool_id"]
    assert _json(run("scope", "assign", "/c1", "--clear", "--json"))["pool_id"] is None
    run("scope", "assign", "/c1", code=2)

    events = _json(run("events", "--json", "--limit", "100"))
    actions = {e["action"] for e in events}
    assert {"pool.create", "scope.create", "allocation.create", "allocation.released"} <= actions
    assert all(e["actor"].startswith("cli:") or e["actor"] == "system" for e in events)
    assert "allocation.released" in run("events", "--action", "allocation").output


def test_token_and_user_commands(run: Run) -> None:
    run("db", "upgrade")
    made = _json(run("token", "create", "--name", "ci", "--role", "operator", "--json"))
    assert made["token"] and made["role"] == "operator"
    text = run("token", "create", "--name", "ro", "--role", "viewer").output
    assert "it is not shown again" in text
    tokens = _json(run("token", "list", "--json"))
    assert {t["name"] for t in tokens} == {"ci", "ro"}
    assert made["token"] not in run("token", "list").output
    assert "Revoked token 'ci'." in run("token", "revoke", "ci").output
    assert [t["revoked"] for t in _json(run("token", "list", "--json")) if t["name"] == "ci"] == [
        True
    ]
    run("token", "create", "--name", "x", "--role", "god", code=2)

    run(
        "user",
        "create",
        "--username",
        "alice",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    users = _json(run("user", "list", "--json"))
    assert {(u["username"], u["role"]) for u in users} >= {("admin", "admin"), ("alice", "viewer")}
    run(
        "user",
        "create",
        "--username",
        "alice",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="another password 1\n",
        code=1,
    )


@pytest.mark.parametrize(
    ("args", "extra", "code", "text"),
    [
        (
            ["allocate", "--scope", "/", "--owner-name", "v", "--interface", "n", "--mac", "zz"],
            {},
            1,
            "'zz'",
        ),
        (["allocate", "--scope", "/nope", "--owner-name", "v", "--interface", "n"], {}, 1, "/nope"),
        (
            ["pool", "create", "--name", "x", "--range", "0a:00:00:00:00:09-0a:00:00:00:00:01"],
            {},
            1,
            "0a:00:00:00:00:09",
        ),
        (["scope", "create", "--kind", "namespace", "--name", "n"], {}, 1, "namespace"),
        (["mac", "not-a-mac"], {}, 1, "not-a-mac"),
        (["pool", "list"], {"MACPOOL_LOW_THRESHOLD": "many"}, 2, "MACPOOL_LOW_THRESHOLD='many'"),
        (["pool", "list"], {"MACPOOL_DATABASE_URL": "mysql://x"}, 2, "MACPOOL_DATABASE_URL"),
    ],
)
def test_errors_exit_non_zero_with_one_line(
    run: Run, args: list[str], extra: dict[str, str], code: int, text: str
) -> None:
    run("db", "upgrade")
    result = run(*args, code=code, **extra)
    assert text in result.stderr


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*prefix, name)))
    return found


def test_every_command_has_help(run: Run) -> None:
    commands = _commands(main)
    assert {("db", "upgrade"), ("pool", "create"), ("token", "create"), ("user", "create")} <= set(
        commands
    )
    for path in commands:
        result = run(*path, "--help")
        assert "Usage: " in result.output, path


def test_migration_check_and_complete(run: Run, tmp_path: Path) -> None:
    run("db", "upgrade")
    run("pool", "create", "--name", "lab", "--range", LAB)
    run("scope", "create", "--kind", "datacenter", "--name", "dc1", "--pool", "lab")
    run("scope", "create", "--kind", "cluster", "--name", "ocp")
    run(
        "allocate",
        "--scope",
        "/dc1",
        "--owner-kind",
        "ovirt-vm",
        "--owner-name",
        "legacy",
        "--owner-uid",
        "vm-1",
        "--interface",
        "nic1",
        "--mac",
        "0a:00:00:00:00:01",
    )
    run(
        "allocate",
        "--scope",
        "/dc1",
        "--owner-kind",
        "device",
        "--owner-name",
        "router",
        "--interface",
        "eth0",
        "--mac",
        "0a:00:00:00:00:02",
    )
    plan = tmp_path / "plan.json"
    nics = [
        {"name": "nic1", "mac": "0a:00:00:00:00:01"},
        {"name": "nic2", "mac": "02:00:00:aa:00:01"},
    ]
    plan.write_text(json.dumps({"vms": [{"id": "vm-1", "name": "legacy", "nics": nics}]}))
    text = run("migration", "check", str(plan), "--scope", "/ocp/team-a").output
    assert "hand-over" in text and "free" in text and "The plan passes." in text
    nics.append({"name": "nic3", "mac": "0a:00:00:00:00:02"})
    plan.write_text(json.dumps([{"id": "vm-1", "name": "legacy", "nics": nics}]))
    failed = run("migration", "check", str(plan), "--scope", "/ocp/team-a", "--json", code=1)
    assert [n["status"] for n in _json(failed)["nics"]] == ["hand-over", "free", "conflict"]
    plan.write_text("{not json")
    run("migration", "check", str(plan), "--scope", "/ocp/team-a", code=1)
    plan.write_text(json.dumps({"vms": [{"id": "vm-1", "nics": []}]}))
    run("migration", "check", str(plan), "--scope", "/ocp/team-a", code=1)
    assert "0 hand-over(s)" in run("migration", "complete", "--plan", "p1").output
    run("migration", "complete", "--scope", "/ocp", code=2)
    run("migration", "complete", code=1)
    listed = _json(run("allocations", "--handover", "pending", "--json"))
    assert listed["total"] == 0


def test_migration_check_reads_an_ovirt_export(run: Run, tmp_path: Path) -> None:
    from plugins.ovirt.generate import vm_ovf

    run("db", "upgrade")
    run("scope", "create", "--kind", "cluster", "--name", "ocp")
    ovf = tmp_path / "web.ovf"
    vm_id = "2b7c9a10-1111-4c53-9d8a-0f7d1c2b9e11"
    ovf.write_text(vm_ovf(vm_id=vm_id, name="web", macs=[0x020000AA0001, 0x020000AA0002]))
    run("import", "ovirt", str(ovf), "--scope", "/", "--apply")
    checked = _json(run("migration", "check", str(ovf), "--scope", "/ocp/apps", "--json"))
    assert [(n["vm_id"], n["nic"], n["status"]) for n in checked["nics"]] == [
        (vm_id, "nic1", "hand-over"),
        (vm_id, "nic2", "hand-over"),
    ]
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not an export")
    run("migration", "check", str(junk), "--scope", "/ocp/apps", code=1)
