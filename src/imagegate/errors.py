"""The one exception tree of imagegate.

Every error knows its HTTP status and the OpenAI error fields (`type`, `param`, `code`), so the web
layer renders any of them as ``{"error": {"message", "type", "param", "code"}}`` without looking
inside. Foreign exceptions (Pillow, multipart, OS errors, upstream HTTP errors) are translated into
this tree at one boundary each; nothing else reaches the web layer, and anything that does is a
bug answered as a bare 500.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagegate.routing.router import Attempt


class ImagegateError(Exception):
    """Base class. Subclasses set the class attributes; instances may override param/code.

    `attempts` lists the upstream attempts made before the error (set by the router; empty when
    the request failed before routing), so accounting settles a failure from typed records.
    """

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    attempts: tuple[Attempt, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


# --- 4xx: the caller's input ----------------------------------------------------------------


class InvalidRequestError(ImagegateError):
    """400: a parameter is missing, malformed or out of range."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class MissingParameterError(InvalidRequestError):
    code = "missing_required_parameter"


class UnsupportedParameterError(InvalidRequestError):
    """400: the parameter is valid in general but this model/provider cannot honour it."""

    code = "unsupported_value"


class ModelRetiredError(InvalidRequestError):
    """400: every offering that could serve the request is retired; the message names the successor."""

    code = "model_retired"


class InvalidImageError(InvalidRequestError):
    """400: the bytes claim to be an image we accept but cannot be decoded (truncated, corrupt)."""

    code = "invalid_image"


class ImageTooLargeError(InvalidRequestError):
    """400: the image's declared pixel count is over the cap (decompression bomb guard)."""

    code = "image_too_large"


class AuthenticationError(ImagegateError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(ImagegateError):
    status = 403
    type = "invalid_request_error"
    code = "forbidden"


class NotFoundError(ImagegateError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class BudgetExceededError(ImagegateError):
    """402: the key's budget cannot cover this request's estimated cost."""

    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"


class ConflictError(ImagegateError):
    """409: an Idempotency-Key reused with a different body, or still in progress."""

    status = 409
    type = "invalid_request_error"
    code = "idempotency_conflict"


class RateLimitError(ImagegateError):
    """429: the key is over its requests-per-minute or images-per-day limit; see Retry-After."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class MethodNotAllowedError(ImagegateError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeoutError(ImagegateError):
    """408: the request's headers or body arrived too slowly; the connection is closed after the answer."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLargeError(ImagegateError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UnsupportedMediaTypeError(ImagegateError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


# --- 5xx: us or upstream --------------------------------------------------------------------


class UpstreamError(ImagegateError):
    """502: a provider failed in a way the caller cannot fix.

    `retryable`: the router may retry or fail over (5xx, 429, timeouts, resets, malformed replies).
    `may_have_charged`: the upstream may already have billed this attempt (the caller gets
    ``x-should-retry: false``). `retry_after`: seconds the upstream asked us to wait.
    `disable_provider`: the provider itself is unusable (bad key) and is taken out of rotation.
    """

    status = 502
    type = "upstream_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        may_have_charged: bool = False,
        disable_provider: bool = False,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.provider = provider
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.may_have_charged = may_have_charged
        self.disable_provider = disable_provider


class UpstreamTimeoutError(UpstreamError):
    """504: the upstream did not answer within the request's deadline."""

    status = 504
    code = "upstream_timeout"


class UpstreamRateLimitError(UpstreamError):
    """429: every candidate was rate-limited; `Retry-After` says when to come back."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamAuthError(UpstreamError):
    """502: the gateway's credentials for a provider were refused (never the caller's fault)."""

    code = "upstream_auth_failed"


class UpstreamMalformedError(UpstreamError):
    """502: the upstream answered something we cannot use (bad JSON, truncated body, 200 with error)."""

    code = "upstream_malformed_response"


class ModerationBlockedError(InvalidRequestError):
    """400: the provider's safety system refused the request. Never failed over."""

    type = "image_generation_user_error"
    code = "moderation_blocked"


class NoProviderAvailableError(ImagegateError):
    """503: the model exists but no provider can serve this request right now."""

    status = 503
    type = "server_error"
    code = "no_provider_available"


class ServiceUnavailableError(ImagegateError):
    """503: a dependency the gateway cannot work without (the database) is unreachable."""

    status = 503
    type = "server_error"
    code = "service_unavailable"


class ServerBusyError(ImagegateError):
    """503: the process's image memory or request budget is full and the wait ran out; see Retry-After."""

    status = 503
    type = "server_error"
    code = "server_busy"


class TooManyConnectionsError(ServiceUnavailableError):
    """503: the server is at its connection cap ([server] max_connections); retry shortly."""

    code = "too_many_connections"


class InternalError(ImagegateError):
    status = 500
    type = "server_error"
    code = "internal_error"
