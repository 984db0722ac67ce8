"""Turn a REST API export, XML or JSON, into one JSON-shaped tree.

The engine serializes one JAXB model both ways, so an XML element maps onto the JSON the
engine would have written: attributes (``id``, ``href``) and child elements become keys,
repeated children become lists, leaf elements become strings. The model reader
(:mod:`plugins.ovirt.api`) then handles a single shape.
"""

from __future__ import annotations

import json
from typing import Any
from xml.etree.ElementTree import Element

from plugins.ovirt.errors import InputTooLarge, OvirtExportError
from plugins.ovirt.xmlsafe import MAX_DEPTH, check_document_size, local, parse_xml

Tree = dict[str, Any]


def _too_deep(source: str) -> InputTooLarge:
    return InputTooLarge(f"the document nests deeper than {MAX_DEPTH} levels.", source=source)


def element_to_tree(element: Element, *, source: str, depth: int = 0) -> Any:
    """The JSON-shaped value of an XML element (a string for a leaf without attributes)."""
    if depth > MAX_DEPTH:
        raise _too_deep(source)
    if len(element) == 0 and not element.attrib:
        return (element.text or "").strip()
    tree: Tree = {local(k): v for k, v in element.attrib.items()}
    for item in element:
        key = local(item.tag)
        value = element_to_tree(item, source=source, depth=depth + 1)
        if key in tree:
            old = tree[key]
            tree[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            tree[key] = value
    return tree


def xml_tree(root: Element, *, source: str) -> Tree:
    """An API XML document as ``{root tag: tree}``, e.g. ``{"mac_pools": {"mac_pool": […]}}``."""
    return {local(root.tag): element_to_tree(root, source=source)}


def _depth_ok(value: Any, *, source: str) -> None:
    # An explicit stack: a hostile document must not exhaust Python's recursion.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(source)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def json_tree(data: bytes, *, source: str) -> Tree:
    """Parse an API JSON document (an object, or a list of objects)."""
    check_document_size(len(data), source=source)
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except RecursionError as exc:
        raise _too_deep(source) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise OvirtExportError(f"not valid JSON: {exc}.", source=source) from exc
    _depth_ok(value, source=source)
    if isinstance(value, list):
        return {"": value}
    if not isinstance(value, dict):
        raise OvirtExportError("the JSON document is not an object.", source=source)
    return value


def parse_api_xml(data: bytes, *, source: str) -> Tree:
    """Parse an API XML document safely into its tree."""
    return xml_tree(parse_xml(data, source=source), source=source)


__all__ = ["Tree", "element_to_tree", "json_tree", "parse_api_xml", "xml_tree"]
