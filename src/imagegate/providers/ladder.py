"""The status ladder every adapter shares: what a non-2xx upstream reply means for routing.

An adapter first reads what is its own in the reply (a 400's parameter and moderation codes, a
provider's special statuses such as fal's "user" 504), then hands the rest to `status_error`:

- 401 / 403: the gateway's credentials were refused. `UpstreamAuthError` that takes the instance out
  (`disable_provider`) and may fail over; the upstream's words are never relayed (they may quote the
  key);
- 429: `UpstreamRateLimitError` with the wait the upstream asked for (`retry_after`), taking the
  instance out when the quota is exhausted rather than the rate exceeded;
- 402: out of credit: `UpstreamError` that takes the instance out;
- 404: the instance does not serve this model or endpoint;
- anything else (408, 409, 5xx): a failure on the upstream's side, retryable unless it said otherwise.

`detail` is text already made safe to relay (`imagegate.redaction.relayable`), with its leading ": ".
"""

from __future__ import annotations

from imagegate.errors import UpstreamAuthError, UpstreamError, UpstreamRateLimitError


def status_error(
    provider: str,
    status: int,
    *,
    detail: str = "",
    retry_after: float | None = None,
    retryable: bool = True,
    quota_exhausted: bool = False,
    refused_credentials: bool = False,
    not_found: str = "does not serve this model or endpoint",
) -> UpstreamError:
    """The error for a non-2xx reply that the adapter did not read as something of its own.
    `refused_credentials`: the body says the key was refused whatever the status (Google: 400)."""
    if status in (401, 403) or refused_credentials:
        return UpstreamAuthError(
            f"{provider} rejected the gateway's credentials (HTTP {status})",
            provider=provider,
            upstream_status=status,
            disable_provider=True,
            retryable=True,
        )
    if status == 429:
        what = "quota is exhausted" if quota_exhausted else "rate limit reached"
        return UpstreamRateLimitError(
            f"{provider} {what}{detail}",
            provider=provider,
            upstream_status=status,
            retry_after=retry_after,
            retryable=retryable,
            disable_provider=quota_exhausted,
        )
    if status == 402:  # prepaid credit used up: nothing to gain from trying again until someone pays
        return UpstreamError(
            f"{provider} has no credit left{detail}", provider=provider, upstream_status=status, disable_provider=True
        )
    what = not_found if status == 404 else f"answered HTTP {status}"
    return UpstreamError(
        f"{provider} {what}{detail}",
        provider=provider,
        upstream_status=status,
        retry_after=retry_after,
        retryable=retryable,
    )
