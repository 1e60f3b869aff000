"""GET /v1/files/{id}: stored images behind HMAC-signed, expiring links."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import FileResponse

from imagegate.errors import NotFoundError, PermissionDeniedError
from imagegate.storage.signing import LinkError

SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


async def get_file(request: Request) -> FileResponse:
    state = request.app.state
    file_id = request.path_params["file_id"]
    try:
        expires = state.signer.verify(
            file_id, request.query_params.get("expires"), request.query_params.get("signature")
        )
    except LinkError as exc:
        if exc.expired:
            raise NotFoundError("this file link has expired", param="file_id", code="file_expired") from None
        raise PermissionDeniedError(
            "invalid file link signature", param="signature", code="invalid_signature"
        ) from None
    found = state.blobs.find(file_id)
    if found is None:
        raise NotFoundError("file not found", param="file_id", code="file_not_found")
    max_age = max(0, expires - int(time.time()))
    headers = {"cache-control": f"private, max-age={max_age}", "x-content-type-options": "nosniff"}
    if found.format == "svg":
        # A provider's SVG is a document: opened from this origin it must not run script, load
        # anything or reach the gateway's pages, whatever it contains.
        headers["content-security-policy"] = SVG_POLICY
    return FileResponse(found.path, media_type=found.content_type, headers=headers)
