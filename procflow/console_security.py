"""What keeps the console safe by default (issue 18): a bearer token for every action,
cross-site form posts refused, a content security policy without inline scripts.

- The server listens on 127.0.0.1 unless told otherwise. On loopback, reading needs no
  token; on any other address every request needs it (`read_needs_token`).
- Every action that changes something (start, deliver, retry) needs the token given at
  start (`--token` or `$PROCFLOW_TOKEN`); without one configured, actions are refused.
  The API takes it as `Authorization: Bearer ...`; the browser's Retry form as a field the
  operator types it into.
- A form post must carry the CSRF value of its page (double submit: a `SameSite=Strict`
  cookie and a hidden field) and, when the browser sends one, an `Origin` of this server.
- Every page is sent with a CSP that allows scripts only from the server's own files.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets

from starlette.datastructures import Headers

TOKEN_ENV = "PROCFLOW_TOKEN"
CSRF_COOKIE = "procflow_csrf"
CSRF_FIELD = "csrf"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def same_secret(given: str | None, expected: str | None) -> bool:
    """Compare a secret in constant time; nothing matches an unset secret."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer(headers: Headers) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def new_csrf() -> str:
    """A fresh CSRF value for a page's forms and its cookie."""
    return secrets.token_urlsafe(32)


def same_origin(headers: Headers) -> bool:
    """False when the browser says the request comes from another site (Origin, else Referer,
    not this server's host); True when it says nothing (non-browser clients send neither)."""
    host = headers.get("host", "")
    origin = headers.get("origin") or headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    rest = origin.split("://", 1)[-1]
    return rest.split("/", 1)[0] == host
