"""GET /v1/files/{id}: stored images behind HMAC-signed, expiring links, from any storage backend.

The gateway's signature is always checked first. Then a local file is sent as a file, an object is
streamed through, or, with `[storage] presign`, the client is redirected to a presigned object URL
valid for the rest of the link's lifetime. SVG is never presigned: it must carry our CSP.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from imagegate.errors import NotFoundError, PermissionDeniedError, ServiceUnavailableError
from imagegate.storage.blobs import BlobStore, StorageError
from imagegate.storage.signing import LinkError

SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


async def get_file(request: Request) -> Response:
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
    max_age = max(0, expires - int(time.time()))
    headers = {"cache-control": f"private, max-age={max_age}", "x-content-type-options": "nosniff"}
    try:
        return await _respond(state.blobs, file_id, max_age, headers)
    except StorageError as exc:
        raise ServiceUnavailableError("file storage is unavailable", code="storage_unavailable") from exc


async def _respond(blobs: BlobStore, file_id: str, max_age: int, headers: dict[str, str]) -> Response:
    if blobs.presigns:
        found = await blobs.lookup(file_id)
        if found is None:
            raise _not_found()
        if found.format != "svg":
            url = await blobs.presign(found, max(1, max_age))
            if url is not None:
                return RedirectResponse(url, status_code=307, headers={"cache-control": headers["cache-control"]})
    opened = await blobs.open(file_id)
    if opened is None:
        raise _not_found()
    found = opened.file
    if found.format == "svg":
        # A provider's SVG is a document: opened from this origin it must not run script, load
        # anything or reach the gateway's pages, whatever it contains.
        headers["content-security-policy"] = SVG_POLICY
    if found.path is not None:
        return FileResponse(found.path, media_type=found.content_type, headers=headers)
    if found.size is not None:
        headers["content-length"] = str(found.size)
    return StreamingResponse(opened.chunks, media_type=found.content_type, headers=headers)


def _not_found() -> NotFoundError:
    return NotFoundError("file not found", param="file_id", code="file_not_found")
