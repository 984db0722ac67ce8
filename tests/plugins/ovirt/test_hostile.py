"""Hostile and oversized inputs are refused with a clear error, within bounds, without hanging."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from plugins.ovirt import xmlsafe
from plugins.ovirt.errors import InputTooLarge, OvirtExportError, UnsafeInput
from plugins.ovirt.generate import vm_ovf
from plugins.ovirt.reader import read_paths, read_upload

from .conftest import tar_bytes

VM_ID = "33333333-3333-4333-8333-333333333333"
OVF = vm_ovf(vm_id=VM_ID, name="a", macs=[0x021A4A000001]).encode()

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<mac_pools><mac_pool id="p"><name>&lol9;</name></mac_pool></mac_pools>"""


def tar_with(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        ok = tarfile.TarInfo("ok.ovf")
        ok.size = len(OVF)
        archive.addfile(ok, io.BytesIO(OVF))
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def test_billion_laughs_is_refused() -> None:
    with pytest.raises(UnsafeInput, match=r"^pools\.xml: the XML declares entities"):
        read_upload("pools.xml", BILLION_LAUGHS)


def test_external_entity_is_refused(tmp_path: Path) -> None:
    xxe = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    path = tmp_path / "x.ovf"
    path.write_bytes(xxe)
    with pytest.raises(UnsafeInput, match=str(path)):
        read_paths([path])


def test_billion_laughs_inside_an_archive_names_the_member() -> None:
    with pytest.raises(UnsafeInput, match=r"^up\.tar!evil\.xml: "):
        read_upload("up.tar", tar_bytes({"evil.xml": BILLION_LAUGHS}))


@pytest.mark.parametrize("name", ["../../x.ovf", "a/../../x.ovf", "/etc/x.ovf", "C:/x.ovf"])
def test_escaping_or_absolute_members_are_refused(name: str) -> None:
    with pytest.raises(UnsafeInput, match=r"^up\.tar: archive member .*(absolute|escape)"):
        read_upload("up.tar", tar_bytes({name: OVF}))


def test_escaping_zip_member_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil.ovf", OVF)
    with pytest.raises(UnsafeInput, match="escape"):
        read_upload("up.zip", buffer.getvalue())


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (tarfile.SYMTYPE, "symbolic link"),
        (tarfile.LNKTYPE, "hard link"),
        (tarfile.CHRTYPE, "device"),
        (tarfile.BLKTYPE, "device"),
        (tarfile.FIFOTYPE, "FIFO"),
    ],
)
def test_links_and_devices_are_refused(kind: bytes, words: str) -> None:
    info = tarfile.TarInfo("link.ovf")
    info.type = kind
    info.linkname = "/etc/passwd"
    with pytest.raises(UnsafeInput, match=f"'link.ovf' is a {words}"):
        read_upload("up.ova", tar_with(info))


def test_zip_symlink_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("link.ovf")
        info.external_attr = (0o120777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeInput, match="symbolic link"):
        read_upload("up.zip", buffer.getvalue())


@pytest.mark.parametrize("mode", ["w", "w:gz"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_archives_are_refused(mode: str, keep: float, tmp_path: Path) -> None:
    data = tar_bytes({"vm.ovf": OVF, "disk.img": bytes(range(256)) * 400}, mode=mode)
    cut = data[: int(len(data) * keep)]
    with pytest.raises(OvirtExportError, match=r"^up\.ova: the archive is truncated"):
        read_upload("up.ova", cut)
    path = tmp_path / "cut.ova"
    path.write_bytes(cut)
    with pytest.raises(OvirtExportError, match="truncated"):
        read_paths([path])


def test_truncated_zip_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("vm.ovf", OVF)
    with pytest.raises(OvirtExportError, match="truncated or corrupt"):
        read_upload("up.zip", buffer.getvalue()[:-30])


def test_ten_megabyte_single_line_ovf_is_read_within_bounds(tmp_path: Path) -> None:
    """A 10 MB OVF on one line (the engine writes OVF_STORE entries without newlines) is below
    the 64 MiB document bound, so it is read, quickly and in full."""
    padding = b"<Description>" + b"x" * (10 * 1024 * 1024) + b"</Description>"
    data = OVF.replace(b"\n", b"").replace(b"<TemplateId>", padding + b"<TemplateId>", 1)
    assert data.count(b"\n") == 0 and len(data) > 10 * 1024 * 1024
    path = tmp_path / f"{VM_ID}.ovf"
    path.write_bytes(data)
    started = time.monotonic()
    export = read_paths([path])
    assert time.monotonic() - started < 10
    assert [n.mac_text for n in export.vms[0].nics] == ["02:1a:4a:00:00:01"]


def test_ten_megabyte_mac_value_is_an_error_not_a_hang() -> None:
    huge = b"0" * (10 * 1024 * 1024)
    data = OVF.replace(b"02:1a:4a:00:00:01", huge)
    with pytest.raises(OvirtExportError, match=r"NIC 'nic1': '0{64}…' is not a MAC"):
        read_upload("big.ovf", data)


def test_document_over_the_bound_is_refused_before_parsing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(xmlsafe, "MAX_DOCUMENT_BYTES", 1024)
    path = tmp_path / "big.ovf"
    path.write_bytes(OVF + b" " * 2048)
    with pytest.raises(InputTooLarge, match="at most 1024 bytes"):
        read_paths([path])
    with pytest.raises(InputTooLarge, match=r"^up\.tar!big\.ovf: "):
        read_upload("up.tar", tar_bytes({"big.ovf": OVF + b" " * 2048}))
    with pytest.raises(InputTooLarge):
        read_upload("big.json", b"{" + b" " * 2048 + b"}")


def test_total_bound_over_many_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xmlsafe, "MAX_TOTAL_BYTES", len(OVF) * 3)
    members = {f"{i}.ovf": OVF for i in range(5)}
    with pytest.raises(InputTooLarge, match="in total"):
        read_upload("up.tar", tar_bytes(members))


def test_member_count_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xmlsafe, "MAX_MEMBERS", 3)
    with pytest.raises(InputTooLarge, match="more than 3 members"):
        read_upload("up.tar", tar_bytes({f"{i}.txt": b"x" for i in range(5)}))


def test_gzip_bomb_is_bounded_by_the_total(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xmlsafe, "MAX_TOTAL_BYTES", 1024 * 1024)
    bomb = tar_bytes({"zeros.img": b"\0" * (4 * 1024 * 1024), "vm.ovf": OVF}, mode="w:gz")
    assert len(bomb) < 64 * 1024
    with pytest.raises(InputTooLarge, match="in total"):
        read_upload("bomb.tar.gz", bomb)


@pytest.mark.parametrize(
    "data",
    [b"[" * 100_000 + b"]" * 100_000, b"<a>" * 10_000 + b"</a>" * 10_000],
)
def test_deep_nesting_is_refused(data: bytes) -> None:
    with pytest.raises(OvirtExportError):
        read_upload("deep", data)


def test_nested_archive_in_archive_is_refused() -> None:
    inner = tar_bytes({"vm.ovf": OVF})
    with pytest.raises(OvirtExportError, match="archive inside an archive"):
        read_upload("outer.tar", tar_bytes({"inner.xml": inner}))


def test_symlinked_file_in_directory_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "real.ovf").write_bytes(OVF)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.ovf"
    outside.write_bytes(OVF.replace(b"02:1a:4a:00:00:01", b"02:1a:4a:00:00:02"))
    (tmp_path / "link.ovf").symlink_to(outside)
    export = read_paths([tmp_path])
    assert [n.mac_text for vm in export.vms for n in vm.nics] == ["02:1a:4a:00:00:01"]
    assert any("symbolic link skipped" in w.message for w in export.warnings)
