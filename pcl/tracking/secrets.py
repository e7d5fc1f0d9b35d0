"""Secrets: MongoDB URLs and passwords never reach a message, record or log; `redact` and `redact_url` are the
only way URLs are shown."""
from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode

MONGO_URL_ENV = "PCL_MONGO_URL"
_SECRETS: set[str] = set()
_URL_USERINFO = re.compile(r"(mongodb(?:\+srv)?://)([^:@/\s]*):([^@/\s]*)@")
_SECRET_PARAMS = ("password", "secret", "token", "key")


def redact_url(url: str | None) -> str:
    """The URL with its password (and secret-looking query parameters) replaced by ***."""
    if not url:
        return str(url)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", url)
    if "?" in text:
        base, _, query = text.partition("?")
        pairs = [(k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v)
                 for k, v in parse_qsl(query, keep_blank_values=True)]
        text = base + "?" + urlencode(pairs, safe="*:/,")
    return text


def _register_secrets(url: str | None) -> None:
    """Remember the password of `url` (raw and URL-encoded) so that `redact` removes it from any text."""
    if not url:
        return
    match = _URL_USERINFO.search(url)
    if match and match.group(3):
        secret = unquote(match.group(3))
        _SECRETS.update(s for s in {match.group(3), secret, quote(secret, safe=""), quote_plus(secret)} if s)
    if "?" in url:
        for key, value in parse_qsl(url.partition("?")[2]):
            if value and any(s in key.lower() for s in _SECRET_PARAMS):
                _SECRETS.add(value)


def redact(text: Any) -> str:
    """Any text with every MongoDB password this process has seen replaced by ***."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", str(text))
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def resolve_mongo_url(mongo_url: str | None = None) -> str | None:
    """The explicit URL, else $PCL_MONGO_URL, else None (file store only)."""
    url = mongo_url if mongo_url else os.environ.get(MONGO_URL_ENV) or None
    _register_secrets(url)
    return url


