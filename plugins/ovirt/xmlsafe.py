"""Safe XML parsing and the size bounds every reader shares.

Exports are untrusted. XML is parsed with defusedxml (no entity declarations, hence no
"billion laughs", and no external entities or DTDs fetched), and every document is bounded in
size before it is parsed. Elements are matched by local name because engine, virt-v2v and
VMware OVFs put the same elements in different namespaces (or none).
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from plugins.ovirt.errors import InputTooLarge, OvirtExportError, UnsafeInput

#: Largest single document (OVF, XML or JSON) a reader parses.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
#: Largest total of bytes read (and decompressed) for one import.
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
#: Most files in one directory tree or archive.
MAX_MEMBERS = 100_000
#: Deepest element nesting the API readers walk (real exports stay below 15).
MAX_DEPTH = 64


def check_document_size(size: int, *, source: str) -> None:
    """Refuse a document larger than :data:`MAX_DOCUMENT_BYTES` before reading it."""
    if size > MAX_DOCUMENT_BYTES:
        raise InputTooLarge(
            f"the document is {size} bytes; at most {MAX_DOCUMENT_BYTES} bytes are read "
            "from one file.",
            source=source,
            details={"size": size, "limit": MAX_DOCUMENT_BYTES},
        )


def parse_xml(data: bytes, *, source: str) -> Element:
    """Parse an untrusted XML document; entity declarations and malformed XML are refused."""
    check_document_size(len(data), source=source)
    try:
        root: Element = fromstring(
            data, forbid_dtd=False, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise UnsafeInput(
            "the XML declares entities or external references, which are refused "
            f"(entity expansion attack?): {exc}.",
            source=source,
        ) from exc
    except ParseError as exc:
        raise OvirtExportError(f"not well-formed XML: {exc}.", source=source) from exc
    return root


def local(tag: object) -> str:
    """An element's or attribute's name without its namespace."""
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]


def attr(element: Element, name: str) -> str | None:
    """The value of the attribute with this local name, whatever its namespace."""
    for key, value in element.attrib.items():
        if local(key) == name:
            return value
    return None


def child(element: Element, name: str) -> Element | None:
    """The first direct child with this local name."""
    return next((c for c in element if local(c.tag) == name), None)


def text_of(element: Element | None) -> str | None:
    """An element's stripped text; ``None`` when the element is absent."""
    if element is None:
        return None
    return (element.text or "").strip()


def child_text(element: Element, name: str) -> str | None:
    """Stripped text of the first direct child with this local name (``None`` when absent)."""
    return text_of(child(element, name))


__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_MEMBERS",
    "MAX_TOTAL_BYTES",
    "attr",
    "check_document_size",
    "child",
    "child_text",
    "local",
    "parse_xml",
]
