"""Network failures in words ("cannot reach huggingface.co: connection refused"), not exception reprs."""
from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
from urllib.parse import urlsplit

# Exceptions that mean the network, not the disk or the data, failed.
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.gaierror,
                  ssl.SSLError)


def _why(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (nothing answers at that address and port)"
    if isinstance(reason, socket.gaierror):
        return "the host name cannot be resolved (no network, or a DNS problem)"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "no answer in time"
    if isinstance(reason, ConnectionResetError):
        return "the connection was reset"
    if isinstance(reason, ssl.SSLError):
        return f"the secure connection failed ({getattr(reason, 'reason', None) or 'TLS error'})"
    if isinstance(reason, http.client.HTTPException):
        return "the connection broke off in the middle of the answer"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[0].lower() + reason.strerror[1:]
    return str(reason) or type(reason).__name__


def network_failure(exc: BaseException, url: str) -> str:
    """What went wrong reaching ``url``, for a person: "cannot reach <host>: connection refused"."""
    host = urlsplit(url).netloc or url
    if isinstance(exc, urllib.error.HTTPError):
        return f"{host} answered HTTP {exc.code} {exc.reason}"
    # urllib wraps the socket error in URLError.reason; aiohttp keeps it as os_error
    reason = getattr(exc, "os_error", None) or (exc.reason if isinstance(exc, urllib.error.URLError) else exc)
    return f"cannot reach {host}: {_why(reason)}"
