"""``macpool import ovirt`` and ``POST /api/v1/imports/ovirt``: reports, roles, bounds and
hostile inputs (each refused with a clear error, nothing written)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from manager.app import create_app
from manager.config import ConfigError, load_settings
from manager.db import Database
from manager.web import state
from plugins.ovirt.generate import vm_ovf
from plugins.ovirt.settings import OvirtSettings
from plugins.ovirt.web import MAX_UPLOAD_KEY

from .conftest import sample, tar_bytes
from .factories import counts

VM_ID = "33333333-3333-4333-8333-333333333333"
OVF = vm_ovf(vm_id=VM_ID, name="web", macs=[0x0A0000000010, 0x0A0000000011]).encode()
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<mac_pools><mac_pool id="p"><name>&lol3;</name></mac_pool></mac_pools>"""


def _tar_with_symlink() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("vm.ovf")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)
    return buffer.getvalue()


def _ten_megabyte_line() -> bytes:
    """A 10 MB OVF on a single line whose MAC field is 10 MB of garbage."""
    return OVF.replace(b"\n", b"").replace(b"0a:00:00:00:00:10", b"0" * (10 * 1024 * 1024))


#: name -> (file name, bytes, words of the expected error)
HOSTILE: dict[str, tuple[str, bytes, str]] = {
    "billion-laughs": ("pools.xml", BILLION_LAUGHS, "declares entities"),
    "escaping member": ("up.tar", tar_bytes({"../../x.ovf": OVF}), "escape"),
    "symlink member": ("up.ova", _tar_with_symlink(), "symbolic link"),
    "truncated archive": (
        "up.ova",
        tar_bytes({"vm.ovf": OVF, "disk.img": bytes(range(256)) * 400})[:30000],
        "truncated",
    ),
    "10 MB single line": ("big.ovf", _ten_megabyte_line(), "NIC 'nic1': '0000"),
}


def _counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return counts(session)


# --- CLI ----------------------------------------------------------------------------------


def test_cli_dry_run_then_apply(cli: Callable[..., Any], db: Database, tmp_path: Path) -> None:
    path = tmp_path / f"{VM_ID}.ovf"
    path.write_bytes(OVF)
    before = _counts(db)
    dry = cli(str(path), "--scope", "/")
    assert dry.exit_code == 0, dry.output
    assert "oVirt import: dry run (nothing written)" in dry.output
    assert "kept       nic1             0a:00:00:00:00:10" in dry.output
    assert "Totals: vms 1, nics 2, kept 2" in dry.output
    assert _counts(db) == before
    applied = cli(str(path), "--scope", "/", "--apply", "--json")
    assert applied.exit_code == 0, applied.output
    report = json.loads(applied.output)
    assert report["applied"] and report["totals"]["kept"] == 2
    assert _counts(db)["allocations"] == before["allocations"] + 2
    again = cli(str(path), "--scope", "/", "--apply", "--json")
    assert json.loads(again.output)["totals"]["unchanged"] == 2


def test_cli_refused_import_prints_the_report_and_exits_1(
    cli: Callable[..., Any], db: Database
) -> None:
    before = _counts(db)
    result = cli(str(sample("ovf/virt-v2v-o-ovirt-export-domain.ovf")), "--scope", "/", "--apply")
    assert result.exit_code == 1
    assert "conflict   eth0             00:11:22:33:44:55" in result.output
    assert "outside the ranges of pool 'Default'" in result.output
    assert "REFUSED: 1 NIC(s)" in result.output
    assert _counts(db) == before


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_cli_refuses_hostile_input(
    cli: Callable[..., Any], db: Database, tmp_path: Path, case: str
) -> None:
    name, data, words = HOSTILE[case]
    path = tmp_path / name
    path.write_bytes(data)
    before = _counts(db)
    result = cli(str(path), "--scope", "/", "--apply")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path}")
    assert words in result.output
    assert _counts(db) == before


# --- REST API -----------------------------------------------------------------------------


def _post(client: FlaskClient, headers: dict[str, str], name: str, data: bytes, **form: str) -> Any:
    # Encoded in memory: werkzeug's test client would spool a large body to a temporary
    # file that stays open when the view refuses the request before reading it.
    boundary, body = encode_multipart(
        {"file": FileStorage(io.BytesIO(data), filename=name), **form}
    )
    return client.post(
        "/api/v1/imports/ovirt",
        data=body,
        headers=headers,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def test_api_dry_run_apply_and_roles(
    client: FlaskClient, db: Database, headers: dict[str, dict[str, str]]
) -> None:
    before = _counts(db)
    assert _post(client, headers["viewer"], "vm.ovf", OVF, scope="/").status_code == 403
    dry = _post(client, headers["operator"], "vm.ovf", OVF, scope="/")
    assert dry.status_code == 200
    assert dry.get_json()["dry_run"] is True and dry.get_json()["totals"]["kept"] == 2
    assert _counts(db) == before
    assert (
        _post(client, headers["operator"], "vm.ovf", OVF, scope="/", dry_run="false").status_code
        == 403
    )
    applied = client.post(
        "/api/v1/imports/ovirt?dry_run=false&scope=/",
        data={"file": (io.BytesIO(OVF), "vm.ovf")},
        headers=headers["admin"],
        content_type="multipart/form-data",
    )
    assert applied.status_code == 200 and applied.get_json()["applied"] is True
    assert _counts(db)["allocations"] == before["allocations"] + 2
    spec = client.get("/api/openapi.json").get_json()
    assert "post" in spec["paths"]["/api/v1/imports/ovirt"]


def test_api_refused_apply_is_409_with_the_report(
    client: FlaskClient, db: Database, headers: dict[str, dict[str, str]]
) -> None:
    data = sample("ovf/virt-v2v-o-ovirt-export-domain.ovf").read_bytes()
    before = _counts(db)
    response = _post(client, headers["admin"], "v2v.ovf", data, scope="/", dry_run="false")
    assert response.status_code == 409
    body = response.get_json()
    assert body["reason"] == "import_refused"
    nic = body["errors"]["report"]["vms"][0]["nics"][0]
    assert (nic["status"], nic["mac"], nic["reason"]) == (
        "conflict",
        "00:11:22:33:44:55",
        "outside_pool",
    )
    assert _counts(db) == before


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_api_refuses_hostile_input(
    client: FlaskClient, db: Database, headers: dict[str, dict[str, str]], case: str
) -> None:
    name, data, words = HOSTILE[case]
    before = _counts(db)
    response = _post(client, headers["admin"], name, data, scope="/", dry_run="false")
    assert response.status_code == 422
    assert response.get_json()["message"].startswith(name)
    assert words in response.get_json()["message"]
    assert _counts(db) == before


def test_api_upload_bound(client: FlaskClient, headers: dict[str, dict[str, str]]) -> None:
    assert client.application.config[MAX_UPLOAD_KEY] == 256 * 1024 * 1024
    # Larger than the API's general 1 MiB limit, well below the import's bound: accepted.
    padded = OVF.replace(
        b"<TemplateId>", b"<Description>" + b"x" * 2_000_000 + b"</Description><TemplateId>", 1
    )
    assert _post(client, headers["operator"], "vm.ovf", padded, scope="/").status_code == 200
    client.application.config[MAX_UPLOAD_KEY] = 100_000
    response = _post(client, headers["operator"], "vm.ovf", padded, scope="/")
    assert response.status_code == 413
    assert "accepts at most 100000 bytes" in response.get_json()["message"]


def test_the_upload_bound_is_an_ovirt_setting_checked_at_start(tmp_path: Path) -> None:
    settings = load_settings({"ovirt_max_upload": "5000"}, environ={})
    assert OvirtSettings.of(settings).ovirt_max_upload == 5000
    environ = {"MACPOOL_DATA_DIR": str(tmp_path), "MACPOOL_OVIRT_MAX_UPLOAD": "7000"}
    app = create_app(settings=load_settings(environ=environ))
    assert app.config[MAX_UPLOAD_KEY] == 7000
    state(app).database.dispose()
    with pytest.raises(ConfigError, match="MACPOOL_OVIRT_MAX_UPLOAD must be at least 1"):
        load_settings(environ={"MACPOOL_OVIRT_MAX_UPLOAD": "0"})
    with pytest.raises(ConfigError, match="MACPOOL_OVIRT_MAX_UPLOAD='lots' is not a whole number"):
        load_settings(environ={"MACPOOL_OVIRT_MAX_UPLOAD": "lots"})
