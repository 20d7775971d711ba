"""Talk to an mrinode's REST API from the plugin (standard library ``urllib`` only).

Proxies from the environment are ignored on purpose: the node is a direct neighbour of
the PACS and a study UID must never travel through a forward proxy.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .rules import Node

__all__ = ["NodeError", "node_jobs", "notify_complete"]


class NodeError(RuntimeError):
    """The node's REST API could not be reached or refused the call (message says which)."""


def _request(node: Node, method: str, path: str, body: bytes | None = None) -> Any:
    url = node.url + path
    headers = {"Accept": "application/json"}
    if node.token:
        headers["Authorization"] = f"Bearer {node.token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=node.timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        text = exc.read()[:300].decode("utf-8", "replace")
        raise NodeError(f"node {node.name!r} answered HTTP {exc.code} to {method} {path.split('?')[0]}: {text}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NodeError(f"node {node.name!r} at {node.url} cannot be reached ({reason}).") from None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def notify_complete(node: Node, study_uid: str) -> Any:
    """Tell the node that a study is complete (``POST /studies/{uid}/complete``).

    Parameters
    ----------
    node : Node
        The destination.
    study_uid : str
        The Study Instance UID.

    Returns
    -------
    Any
        The node's decoded JSON answer.

    Raises
    ------
    NodeError
        If the node cannot be reached or answers an error.
    """
    return _request(node, "POST", f"/studies/{urllib.parse.quote(study_uid, safe='')}/complete", b"{}")


def node_jobs(node: Node, study_uid: str) -> Any:
    """The node's jobs for one study (``GET /jobs?study_uid=UID``).

    Raises
    ------
    NodeError
        If the node cannot be reached or answers an error.
    """
    return _request(node, "GET", "/jobs?" + urllib.parse.urlencode({"study_uid": study_uid}))
