"""Secrets: MongoDB URLs and passwords never reach a message, record or log; `redact` and `redact_url` are the
only way URLs are shown. Standard library only, so that reading records (pcl.results, analysis/) can use it
without torch or Sacred; the tracking layer and the analysis share it.

A URL is treated as a user typed it, not as RFC 3986 says it should be: the password is everything between the
first ':' of the user part and the LAST '@' before the host, so a password with '/', '@', ':', '?' or '#' in it,
a URL without its scheme (`user:pw@host`) and a URL no parser accepts are redacted all the same.
"""
from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote, quote_plus, unquote

MONGO_URL_ENV = "PCL_MONGO_URL"
_SECRETS: set[str] = set()
#: in free text: [scheme://]user:PASSWORD@ where PASSWORD runs (without whitespace) to the token's last '@'
_USERINFO_IN_TEXT = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.\-]*://)?[^\s:/@'\"<>()\[\]{},;=]+):(?!//)(\S*)@")
_SECRET_PARAM_IN_TEXT = re.compile(r"([?&;][^\s=&;?#]*(?:password|secret|token|key|pwd|mechanismproperties)[^\s=&;?#]*=)[^\s&;#'\"]*",
                                   re.IGNORECASE)
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]*://)")
_SECRET_PARAMS = ("password", "secret", "token", "key", "pwd", "mechanismproperties")
_PASSWORD_DELIMITERS = re.compile(r"[/?#@:\[\]\s]+")
_MIN_FRAGMENT = 3


def _split_url(url: str) -> tuple[str, str | None, str | None, str]:
    """(scheme incl. '://' or '', user or None, password or None, rest after the userinfo's '@')."""
    match = _SCHEME.match(url)
    scheme = match.group(1) if match else ""
    body = url[match.end():] if match else url.lstrip()
    if "@" not in body:
        return scheme, None, None, body
    userinfo, _, rest = body.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return scheme, user, (password if colon else None), rest


def _redact_query(rest: str) -> str:
    """Secret-looking query parameters (password, token, ...=VALUE) -> ***; the text is not re-encoded."""
    base, sep, query = rest.partition("?")
    if not sep:
        return rest
    pairs = []
    for pair in re.split(r"([&;])", query):
        key, eq, _value = pair.partition("=")
        secret = eq and any(s in key.lower() for s in _SECRET_PARAMS)
        pairs.append(f"{key}=***" if secret else pair)
    return base + "?" + "".join(pairs)


def url_database(url: str) -> str | None:
    """The database named in a MongoDB URL's path (mongodb://host/DB?...), percent-decoded, or None: the one
    reading of that name, shared by the writers (pcl.tracking.stores) and the readers (pcl.results), so both use
    the same database. A '/' in the password is not taken for the path."""
    host_part = _split_url(url)[3]  # after the userinfo's last '@'
    match = re.match(r"[^/?]*/([^?]+)", host_part)
    return unquote(match.group(1)) if match and match.group(1) else None


def redact_url(url: str | None) -> str:
    """The URL with its password (and secret-looking query parameters) replaced by ***; any string is accepted
    (no scheme, unescaped '/', '@' or ':' in the password, unparsable): nothing after `user:` is kept."""
    if not url:
        return str(url)
    scheme, user, password, rest = _split_url(str(url))
    userinfo = ""
    if user is not None:
        userinfo = f"{user}:***@" if password is not None else f"{user}@"
    return redact(scheme + userinfo + _redact_query(rest))


def _register_secrets(url: str | None) -> None:
    """Remember the password of `url` (raw, URL-decoded and URL-encoded, and its pieces between URL delimiters
    that a parser may quote alone) and secret query values, so that `redact` removes them from any text."""
    if not url:
        return
    _, _, password, rest = _split_url(str(url))
    if password:
        secret = unquote(password)
        found = {password, secret, quote(secret, safe=""), quote_plus(secret)}
        for spelling in (password, secret):
            found.update(p for p in _PASSWORD_DELIMITERS.split(spelling) if len(p) >= _MIN_FRAGMENT)
        _SECRETS.update(s for s in found if s)
    _, sep, query = rest.partition("?")
    if sep:
        for pair in re.split(r"[&;]", query):
            key, eq, value = pair.partition("=")
            if eq and value and any(s in key.lower() for s in _SECRET_PARAMS):
                _SECRETS.update({value, unquote(value)})


def redact(text: Any) -> str:
    """Any text with every URL password in it, and every secret this process has seen, replaced by ***."""
    text = _USERINFO_IN_TEXT.sub(lambda m: f"{m.group(1)}:***@", str(text))
    text = _SECRET_PARAM_IN_TEXT.sub(lambda m: f"{m.group(1)}***", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def resolve_mongo_url(mongo_url: str | None = None) -> str | None:
    """The explicit URL, else $PCL_MONGO_URL, else None (file store only)."""
    url = mongo_url if mongo_url else os.environ.get(MONGO_URL_ENV) or None
    _register_secrets(url)
    return url
