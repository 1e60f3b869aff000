"""Masking of secrets in text that leaves the gateway (responses, ledger rows, logs).

One `Redactor` per gateway holds every configured secret value (each provider's API key, the
link-signing key, the key pepper, passwords in the database/Redis URLs) plus patterns for
credentials the gateway cannot know in advance: ``Bearer <token>``, ``Key <token>`` (fal's
scheme), ``sk-...`` tokens, our own ``igk_`` API keys, ``user:password@`` in URLs and
``key=``/``token=``-style query values. `redact` masks each match (``sk-...abcd``, ``[redacted]``):
never the full value, never more than its last 4 characters.

Literal secrets shorter than `MIN_LITERAL_CHARS` (8) are not masked as literals: a short value
such as ``test`` or ``k`` would turn every occurrence of a common word into ``[redacted]``. Such
keys are still masked where they follow ``Bearer``/``Key`` only if long enough to look like a
token; configure real keys (which are far longer) and this never matters.

Where it applies: the provider boundary (`imagegate.providers.registry` wraps every provider so
that each error leaving it, and the text fields of each result, pass `redact`), then, as defence
in depth with the same object, the log record filter installed by `install`, and the last guard
in `imagegate.web.responses.error_response`. Cheap on the hot path: one precompiled regex, and
no work at all for text shorter than the shortest possible match.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from imagegate.config import Settings
    from imagegate.errors import ImagegateError

MIN_LITERAL_CHARS = 8
MAX_RELAYED_CHARS = 300  # upstream text relayed to a caller is cut to this many characters
MASK = "[redacted]"
KEPT_PREFIXES = ("sk-", "igk_")  # kept in the mask so a reader still sees what kind of key it was
_SHOW_TAIL_FROM = 20  # a value this long (after its prefix) shows its last 4 characters
_TOKEN = r"[A-Za-z0-9._~+/=:\-]"
# (pattern, what must occur in the text for it to match: in the text as is, or lower-cased)
_PATTERNS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (rf"(?P<scheme>\b(?:(?i:bearer)|Key)\s+)(?P<token>{_TOKEN}{{16,}})", ("Key",), ("bearer",)),
    (r"(?P<sk>\bsk-[A-Za-z0-9_\-]{16,})", (), ("sk-",)),
    (r"(?P<igk>\bigk_[0-9A-Za-z_]{8,})", (), ("igk_",)),
    (r"(?P<userinfo>://[^/\s:@]*:)(?P<password>[^/\s@]{3,})@", ("://",), ()),
    (
        r"(?P<param>\b(?i:api[_-]?key|access[_-]?token|token|key|secret|password)=)(?P<value>[^&\s\"'<>]{8,})",
        (),
        ("key=", "token=", "secret=", "password="),
    ),
)
_MIN_MATCH = 8  # no pattern nor literal matches fewer characters

log = logging.getLogger("imagegate.redaction")


def mask(secret: str) -> str:
    """``sk-...abcd`` / ``...abcd`` for long values, ``[redacted]`` (after a kept prefix) otherwise."""
    prefix = next((p for p in KEPT_PREFIXES if secret.startswith(p)), "")
    if len(secret) - len(prefix) >= _SHOW_TAIL_FROM:
        return f"{prefix}...{secret[-4:]}"
    return f"{prefix}{MASK}"


def _replace(match: re.Match[str]) -> str:
    groups = match.groupdict()
    if groups.get("scheme") is not None:
        return match.group("scheme") + mask(match.group("token"))
    if groups.get("userinfo") is not None:
        return f"{match.group('userinfo')}{MASK}@"
    if groups.get("param") is not None:
        return match.group("param") + MASK
    return mask(match.group(0))


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    triggers: tuple[str, ...]  # any of these in the text as is
    lower_triggers: tuple[str, ...]  # any of these in the lower-cased text

    def may_match(self, text: str, lowered: str) -> bool:
        return any(map(text.__contains__, self.triggers)) or any(map(lowered.__contains__, self.lower_triggers))


_COMPILED = tuple(_Pattern(re.compile(p), t, lt) for p, t, lt in _PATTERNS)


def _literal_forms(secret: str | bytes | None) -> set[str]:
    """The value, its `id:secret` halves and its URL-encoded form: each one long enough to mask."""
    if secret is None:
        return set()
    text = secret.decode("utf-8", "ignore") if isinstance(secret, bytes) else secret
    text = text.strip()
    forms = {text, quote(text, safe=""), *text.split(":")}
    return {form for form in forms if len(form) >= MIN_LITERAL_CHARS}


class Redactor:
    """Masks configured secrets and credential-shaped tokens in text. Thread-safe; `add` may grow it.

    Cheap: text shorter than any match is returned at once; each literal is looked for with `in`
    (and replaced only when present), and a pattern's regex runs only when a substring it needs
    (``sk-``, ``bearer``, ``://``, ...) occurs in the text.
    """

    def __init__(self, secrets: Iterable[str | bytes | None] = ()) -> None:
        self._lock = threading.Lock()
        self._literals: tuple[tuple[str, str], ...] = ()  # (value, its mask), the longest first
        self.add(*secrets)

    @property
    def literal_count(self) -> int:
        return len(self._literals)

    def add(self, *secrets: str | bytes | None) -> None:
        """Also mask these values (and their halves/URL-encoded forms) from now on."""
        with self._lock:
            literals = {value for value, _ in self._literals}
            for secret in secrets:
                literals |= _literal_forms(secret)
            ordered = sorted(literals, key=lambda value: (-len(value), value))  # a key before its halves
            self._literals = tuple((value, mask(value)) for value in ordered)

    def redact(self, text: str) -> str:
        if len(text) < _MIN_MATCH:
            return text
        for value, masked in self._literals:
            if value in text:
                text = text.replace(value, masked)
        lowered = text.lower()
        for pattern in _COMPILED:
            if pattern.may_match(text, lowered):
                text = pattern.regex.sub(_replace, text)
        return text

    def relayable(self, text: str, limit: int = MAX_RELAYED_CHARS) -> str:
        """Upstream text fit to relay: whitespace folded, redacted (before cutting), cut to `limit`."""
        folded = " ".join(text.split())
        redacted = self.redact(folded)
        return redacted if len(redacted) <= limit else redacted[: limit - 1] + "…"

    def error(self, exc: ImagegateError) -> ImagegateError:
        """Redact an error's message, param, code and header values in place; returns it."""
        message = self.redact(exc.message)
        if message != exc.message:
            exc.message = message
            exc.args = (message,)
        if exc.param is not None:
            exc.param = self.redact(exc.param)
        if exc.code is not None and len(exc.code) >= _MIN_MATCH:
            code = self.redact(exc.code)
            if code != exc.code:
                exc.code = code
        for name, value in list(exc.headers.items()):
            exc.headers[name] = self.redact(value)
        return exc


# --- secrets from settings ----------------------------------------------------------------------


def provider_secrets(settings: Settings, default_key_envs: dict[str, str | None]) -> list[str]:
    """Each provider's API key: configured ones, and built-in/plugin ones from their default env var."""
    keys: list[str] = []
    names = set(settings.providers) | set(default_key_envs)
    for name in sorted(names):
        section = settings.provider(name)
        default_env = default_key_envs.get(name) or section.api_key_env
        if default_env is not None:
            key = section.key(default_env)
        else:
            key = section.api_key.get_secret_value() if section.api_key is not None else None
        if key:
            keys.append(key)
    return keys


def local_secrets(settings: Settings) -> list[str | bytes]:
    """Secrets that never leave the gateway: link-signing key, key pepper, database/Redis passwords."""
    found: list[str | bytes] = [settings.resolved_signing_key(), settings.resolved_pepper()]
    for url in (settings.database_url, settings.redis_url):
        if url:
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password:
                found.append(password)
    return found


# --- the process-wide guards: logs and the last check before an error body leaves --------------

_current = Redactor()
_factory_installed = False
_install_lock = threading.Lock()


def current() -> Redactor:
    """The redactor of the running gateway (one per process; patterns only before `install`)."""
    return _current


class RedactingFilter(logging.Filter):
    """Redacts a record's formatted message, exception text and stack text with `current()`.

    A filter on the root logger only sees records logged to the root logger itself, so `install`
    also runs it for every record any logger creates (through the log record factory): handlers
    added later (pytest's caplog, uvicorn's) then only ever see redacted records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_imagegate_redacted", False):
            return True
        record._imagegate_redacted = True
        redactor = current()
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        redacted = redactor.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            redacted = redactor.redact(text)
            if redacted != text:  # keep no path to the raw exception text
                record.exc_text, record.exc_info = redacted, None
        elif record.exc_text:
            record.exc_text = redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.redact(record.stack_info)
        return True


FILTER = RedactingFilter()


def install(redactor: Redactor) -> None:
    """Make `redactor` the process's log and error-body guard (idempotent; the latest app wins)."""
    global _current, _factory_installed
    with _install_lock:
        _current = redactor
        root = logging.getLogger()
        if FILTER not in root.filters:
            root.addFilter(FILTER)
        if not _factory_installed:
            logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory()))
            _factory_installed = True


def _redacting_factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make(
        name: str,
        level: int,
        fn: str,
        lno: int,
        msg: object,
        args: object,
        exc_info: object,
        func: str | None = None,
        sinfo: str | None = None,
    ) -> logging.LogRecord:
        record = previous(name, level, fn, lno, msg, args, exc_info, func, sinfo)
        FILTER.filter(record)
        return record

    return make


_PATTERNS_ONLY = Redactor()


def relayable(text: str, limit: int = MAX_RELAYED_CHARS) -> str:
    """Upstream text fit to relay, for pure wire code that holds no configured secret: credential
    patterns masked, whitespace folded, cut to `limit`. The provider boundary adds the literals."""
    return _PATTERNS_ONLY.relayable(text, limit)
