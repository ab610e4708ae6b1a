"""Small JSON-over-HTTP helpers with timeouts (the engines' servers run on this machine)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


class HttpError(OSError):
    pass


def request(url: str, payload: dict | None = None, timeout: float = 5.0, method: str | None = None) -> tuple[int, str]:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise HttpError(str(e)) from None


def _json(url: str, payload: dict | None, timeout: float):
    status, body = request(url, payload, timeout=timeout)
    if status != 200:
        raise HttpError(f"HTTP {status} from {url}: {body[:200]}")
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise HttpError(f"{url} did not return JSON") from None


def get_json(url: str, timeout: float = 5.0):
    return _json(url, None, timeout)


def post_json(url: str, payload: dict, timeout: float = 600.0):
    return _json(url, payload, timeout)


def base_url(host: str, port: int) -> str:
    h = "127.0.0.1" if host in ("", "0.0.0.0") else ("[::1]" if host == "::" else host)
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"
    return f"http://{h}:{port}"
