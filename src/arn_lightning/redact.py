"""Masking credentials in URLs and in any text that can hold a URL, before the text reaches a log, an event, an
exception, a JSON line or a file name (docs/streaming.md, "Secrets never reach a log").

What is masked, in every ``scheme://...`` URL found in a text:

- the password of ``user:password@host`` (``user:***@host``; the user name stays, it names the account);
- the value of every query parameter whose name is secret-looking: one of :data:`SECRET_WORDS` as a whole word
  of the name (``token``, ``access_token``, ``api_key``, ``X-Amz-Signature``, ``sig``, ``password`` ...):
  ``?token=***``.

Library messages do not always repeat a URL whole (an error may quote ``PASSWORD@host:port`` only), so
:func:`redact` also takes the URLs the text is about and replaces their secrets wherever they appear.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

#: What a masked secret becomes.
MASK = "***"
#: Words of a query parameter name that make its value a secret (compared lower-case, as whole words of the name
#: split at ``-``, ``_`` and ``.``; a name that is one of them run together, like ``apikey``, counts too).
SECRET_WORDS = frozenset(
    {
        "token",
        "key",
        "apikey",
        "sig",
        "signature",
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "session",
        "accesstoken",
    }
)
#: A URL inside a text: a scheme, ``://`` and everything up to white space or a quote / bracket.
URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}`]+")
#: Punctuation that ends a URL quoted in a sentence ("... from rtsp://cam/live: no data").
_TRAILING = ".,;:!?"
#: Shortest secret replaced literally in a text (shorter values, like ``1``, would mask unrelated digits).
_MIN_LITERAL = 3


def _secret_name(name: str) -> bool:
    lower = name.lower()
    return lower in SECRET_WORDS or any(word in SECRET_WORDS for word in re.split(r"[-_.]+", lower))


def _mask_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        parts.append(f"{name}{sep}{MASK}" if sep and value and _secret_name(name) else item)
    return "&".join(parts)


def mask_url(url: str) -> str:
    """``url`` with its password (``user:***@``) and secret-looking query values (``token=***``) masked; a text
    that does not parse as a URL is returned unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed port or IPv6 literal: mask what looks like user:password@ anyway
        return re.sub(r"(://[^/@:\s]*):[^/@\s]*@", rf"\1:{MASK}@", url, count=1)
    netloc = parts.netloc
    if password:
        user_info, at, host = netloc.rpartition("@")
        user = user_info.split(":", 1)[0]
        netloc = f"{user}:{MASK}{at}{host}"
    query = _mask_query(parts.query) if parts.query else parts.query
    if netloc == parts.netloc and query == parts.query:
        return url
    return parts._replace(netloc=netloc, query=query).geturl()


def url_secrets(url: str) -> list[str]:
    """The secrets :func:`mask_url` hides in ``url``: its password and its secret-looking query values."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [password] if password else []
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if _secret_name(name):
            found.append(value)
    raw = [item.partition("=")[2] for item in parts.query.split("&") if _secret_name(item.partition("=")[0])]
    return [secret for secret in dict.fromkeys(found + raw) if len(secret) >= _MIN_LITERAL]


def _mask_match(match: re.Match[str]) -> str:
    """:func:`mask_url` of a URL found in a text, the punctuation that ends a sentence left out of it."""
    found = match.group(0)
    url = found.rstrip(_TRAILING)
    return mask_url(url) + found[len(url) :]


def redact(text: str, *urls: str) -> str:
    """``text`` with every URL in it masked (:func:`mask_url`), and every secret of ``urls`` (the URLs the text is
    about) replaced by ``***`` wherever else it appears (a library message may quote ``PASSWORD@host`` alone)."""
    text = URL_IN_TEXT.sub(_mask_match, str(text))
    for url in urls:
        for secret in url_secrets(url):
            text = text.replace(secret, MASK)
    return text


__all__ = ["MASK", "SECRET_WORDS", "mask_url", "redact", "url_secrets"]
