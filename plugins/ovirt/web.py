# flask-smorest ships no type hints, so its decorators are untyped.
# mypy: disable-error-code="untyped-decorator"
"""``POST /api/v1/imports/ovirt``: import an uploaded oVirt export (dry run by default).

Registered on the REST API's flask-smorest ``Api`` (so it is in ``/api/openapi.json``) and
protected by the API's ``requires``: an operator may run a dry run, applying needs an admin.
The API's 1 MiB body limit is far too small for exports, so this endpoint raises the limit
for its own requests to ``MACPOOL_OVIRT_MAX_UPLOAD`` bytes (256 MiB by default) and answers
a larger upload with 413 before reading it. Domain errors (an unreadable export: 422, a
refused import: 409 with the report under ``errors.report``) go through the API's handlers.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.fields import Upload
from marshmallow import Schema, fields, validate

from manager.api_support import (
    ErrorSchema,
    MigrationCheckSchema,
    authorize,
    current_actor,
    current_principal,
    requires,
)
from manager.presenters import migration_check_data
from manager.services import check_migration
from manager.web import state, unit_of_work
from plugins.ovirt.importer import ImportOptions, import_in_phases
from plugins.ovirt.reader import read_upload
from plugins.ovirt.settings import OvirtSettings
from plugins.ovirt.sources import export_sources

log = logging.getLogger(__name__)

#: app.config key of the upload bound, in bytes (``MACPOOL_OVIRT_MAX_UPLOAD`` when not set).
MAX_UPLOAD_KEY = "MACPOOL_OVIRT_MAX_UPLOAD"

blp = Blueprint(
    "ovirt_import",
    __name__,
    url_prefix="/api/v1/imports",
    description="Import pools, scopes and in-use MACs from oVirt exports",
)


class ImportFlagsSchema(Schema):
    """The flags, accepted as form fields or query parameters (the form wins)."""

    dry_run = fields.Boolean(
        load_default=None, metadata={"description": "Only report (default true)"}
    )
    reassign_bad_macs = fields.Boolean(
        load_default=None, metadata={"description": "Give bad MACs new ones (default false)"}
    )
    scope = fields.String(
        load_default=None,
        metadata={"description": "Scope for VMs whose cluster is not in the export"},
    )


class NicReportSchema(Schema):
    name = fields.String()
    interface = fields.String()
    status = fields.String(
        metadata={"description": "kept, unchanged, new, reassigned, external or conflict"}
    )
    mac = fields.String(allow_none=True)
    old_mac = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    message = fields.String()
    holders = fields.List(fields.String())


class VmReportSchema(Schema):
    name = fields.String()
    id = fields.String()
    source = fields.String()
    scope = fields.String()
    pool = fields.String()
    nics = fields.List(fields.Nested(NicReportSchema))


class ImportReportSchema(Schema):
    """What the import did (or, in a dry run, would do)."""

    dry_run = fields.Boolean()
    applied = fields.Boolean()
    refused = fields.Boolean()
    reassign_bad_macs = fields.Boolean()
    totals = fields.Dict(keys=fields.String(), values=fields.Integer())
    pools = fields.List(fields.Dict())
    scopes = fields.List(fields.Dict())
    vms = fields.List(fields.Nested(VmReportSchema))
    warnings = fields.List(fields.Dict())


class ImportUploadSchema(ImportFlagsSchema):
    """The multipart body: the export file plus the flags as form fields."""

    file = Upload(
        required=True,
        metadata={
            "description": "An .ovf, .ova, tar/zip (export domain, OVF_STORE), API export, "
            "engine-backup archive or engine_backup.db (plain or custom pg_dump)"
        },
    )


def max_upload() -> int:
    """The upload bound of this app, in bytes."""
    return int(current_app.config[MAX_UPLOAD_KEY])


@blp.before_request
def _raise_the_body_limit() -> None:
    # Before anything reads the body: refuse what is too large, allow up to the plugin's bound.
    limit = max_upload()
    size = request.content_length
    if size is not None and size > limit:
        abort(
            413,
            message=f"The upload is {size} bytes; an oVirt import accepts at most {limit} "
            f"bytes ({MAX_UPLOAD_KEY}).",
            reason="payload_too_large",
            errors={"size": size, "limit": limit},
        )
    request.max_content_length = limit


def _flag(form: dict[str, Any], query: dict[str, Any], name: str, default: Any) -> Any:
    for source in (form, query):
        if source.get(name) is not None:
            return source[name]
    return default


@blp.route("/ovirt")
class OvirtImport(MethodView):
    @requires(blp, "operator")
    @blp.arguments(ImportFlagsSchema, location="query", as_kwargs=False)
    @blp.arguments(ImportUploadSchema, location="files", as_kwargs=False)
    @blp.response(200, ImportReportSchema)
    @blp.alt_response(
        409,
        schema=ErrorSchema,
        description="import_refused (errors.report), range_overlap, name_in_use",
    )
    @blp.alt_response(413, schema=ErrorSchema, description="The upload exceeds the bound")
    @blp.alt_response(
        422,
        schema=ErrorSchema,
        description="The export cannot be read (names the file, VM and NIC)",
    )
    def post(self, query: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
        """Import an oVirt export: a dry run (operator) unless dry_run=false (admin)"""
        # The files location documents the flags inside the multipart body; they are parsed
        # from the form here, with the same schema and the same 422 on bad values.
        form = blp.ARGUMENTS_PARSER.parse(ImportFlagsSchema(), request, location="form")
        dry_run = bool(_flag(form, query, "dry_run", True))
        if not dry_run:
            authorize("admin", current_principal(), presented=True)
        options = ImportOptions(
            dry_run=dry_run,
            reassign_bad_macs=bool(_flag(form, query, "reassign_bad_macs", False)),
            scope=_flag(form, query, "scope", None),
        )
        upload = files["file"]
        try:
            data = upload.read(max_upload() + 1)
        finally:
            upload.close()  # a large upload is spooled to a temporary file
        filename = upload.filename or "upload"
        export = read_upload(filename, data)
        report = import_in_phases(
            unit_of_work, current_actor(), export, options=options, sources=[filename]
        )
        return report.to_dict()


class MigrationCheckFormSchema(Schema):
    scope = fields.String(
        required=True,
        validate=validate.Regexp(r"^/", error="A scope path starts with '/', e.g. /kubernetes/ns."),
        metadata={"description": "Target scope path, e.g. /kubernetes/team-a (may not exist yet)"},
    )


@blp.route("/ovirt/migration-check")
class OvirtMigrationCheck(MethodView):
    @requires(blp, "viewer")
    @blp.arguments(ImportUploadSchema, location="files", as_kwargs=False)
    @blp.response(200, MigrationCheckSchema)
    @blp.alt_response(413, schema=ErrorSchema, description="The upload exceeds the bound")
    @blp.alt_response(
        422,
        schema=ErrorSchema,
        description="The export cannot be read (names the file, VM and NIC), or a bad scope",
    )
    def post(self, files: dict[str, Any]) -> dict[str, Any]:
        """Would the VMs of this oVirt export keep their MACs in the target scope? Per NIC"""
        form = blp.ARGUMENTS_PARSER.parse(MigrationCheckFormSchema(), request, location="form")
        upload = files["file"]
        try:
            data = upload.read(max_upload() + 1)
        finally:
            upload.close()
        export = read_upload(upload.filename or "upload", data)
        with unit_of_work() as session:
            check = check_migration(session, scope=form["scope"], vms=export_sources(export))
        return migration_check_data(check)


def _configured_limit(app: Flask) -> int:
    configured = app.config.get(MAX_UPLOAD_KEY)
    if configured:
        return int(configured)
    return OvirtSettings.of(state(app).settings).ovirt_max_upload


def init_app(app: Flask) -> None:
    """Register the endpoint on the app's REST API; without the API there is nothing to do."""
    app.config[MAX_UPLOAD_KEY] = _configured_limit(app)
    apis = app.extensions.get("flask-smorest", {}).get("apis", {})
    entry = apis.get("")
    if entry is None:
        log.info("oVirt plugin: no REST API in this app; POST /api/v1/imports/ovirt is off.")
        return
    entry["ext_obj"].register_blueprint(blp)


__all__ = ["MAX_UPLOAD_KEY", "blp", "init_app", "max_upload"]
