"""The OpenAPI parts of async jobs: the job object, 202 on the image endpoints, GET/DELETE a job."""

from __future__ import annotations

from typing import Any

from imagegate.web.openapi_parts import REF, error_responses

PREFER: dict[str, Any] = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "respond-async: run the request as a job (202 with the job object).",
}
JOB: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "status", "model", "mode", "created_at", "request_id", "progress"],
    "properties": {
        "id": {"type": "string", "pattern": "^job_"},
        "object": {"const": "image.job"},
        "status": {"enum": ["queued", "running", "succeeded", "failed", "canceled"]},
        "model": {"type": "string"},
        "mode": {"enum": ["text-to-image", "image-edit"]},
        "created_at": {"type": "integer"},
        "started_at": {"type": ["integer", "null"]},
        "finished_at": {"type": ["integer", "null"]},
        "request_id": {"type": "string"},
        "progress": {
            "type": "object",
            "properties": {"stage": {"enum": ["queued", "running", "finished"]}, "attempts": {"type": "integer"}},
        },
        "cancel_requested": {"type": "boolean"},
        "webhook": {
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "properties": {
                        "url": {"type": "string"},
                        "status": {"enum": ["waiting", "pending", "delivering", "delivered", "failed"]},
                        "attempts": {"type": "integer"},
                        "last_error": {"type": ["string", "null"]},
                    },
                },
            ]
        },
        "result": {"$ref": REF + "ImagesResponse"},
        "error": {"type": "object", "description": "OpenAI's error object, when the job failed"},
        "error_status": {"type": "integer", "description": "the HTTP status a synchronous request would have had"},
    },
}


def accepted() -> dict[str, Any]:
    return {
        "description": "Accepted as a job (Prefer: respond-async, async: true or webhook_url)",
        "headers": {"location": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": {"$ref": REF + "ImageJob"}}},
    }


def job_paths() -> dict[str, Any]:
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ok = {"description": "The job", "content": {"application/json": {"schema": {"$ref": REF + "ImageJob"}}}}
    return {
        "/v1/images/jobs/{job_id}": {
            "get": {
                "operationId": "retrieveImageJob",
                "summary": "An async image job: status, and the result once succeeded",
                "parameters": [job_id],
                "responses": {"200": ok, **error_responses(401, 404)},
            },
            "delete": {
                "operationId": "cancelImageJob",
                "summary": "Cancel a queued or running job (the upstream call too)",
                "parameters": [job_id],
                "responses": {"200": ok, **error_responses(401, 404, 409)},
            },
        }
    }
