"""Alert notifications to a webhook: JSON, retried with backoff, one message per state change.

The body follows Alertmanager's webhook format (``version``, ``status``, ``alerts[]`` with ``labels``,
``annotations``, ``startsAt``, ``endsAt``, ``fingerprint``), so receivers written for Alertmanager (chat
bridges, incident tools) accept it unchanged; modelyard's own fields sit beside them at the top level.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import httpx

from modelyard.monitor.alert_state import Transition

log = logging.getLogger("modelyard.monitor")
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class Notifier(Protocol):
    def notify(self, transition: Transition) -> bool: ...


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def alert_payload(transition: Transition, *, dashboard_url: str | None = None) -> dict[str, Any]:
    a = transition.alert
    details = a.get("details") or {}
    labels = {
        "alertname": f"modelyard_{a['rule']}",
        "model": a["model"],
        "version": str(a["version"]),
        "rule": a["rule"],
        "severity": details.get("severity", "warning"),
    }
    if details.get("feature"):
        labels["feature"] = details["feature"]
    fingerprint = hashlib.sha256(
        "|".join(f"{k}={v}" for k, v in sorted(labels.items())).encode()
    ).hexdigest()[:16]
    message = details.get("resolve_message") if transition.status == "resolved" else a.get("message")
    alert = {
        "status": transition.status,
        "labels": labels,
        "annotations": {
            "summary": message or "",
            "value": str(a.get("value")),
            "threshold": str(a.get("threshold")),
        },
        "startsAt": _iso(a.get("started_at")),
        "endsAt": _iso(a.get("resolved_at")) or "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
        "generatorURL": dashboard_url or "",
    }
    return {
        "version": "4",
        "receiver": "modelyard",
        "status": transition.status,
        "groupKey": f"modelyard:{a['model']}:{a['version']}:{details.get('key', a['rule'])}",
        "groupLabels": {"model": a["model"]},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": dashboard_url or "",
        "alerts": [alert],
        "alert_id": a.get("id"),
        "model": a["model"],
        "model_version": a["version"],
        "rule": a["rule"],
        "feature": details.get("feature"),
        "value": a.get("value"),
        "threshold": a.get("threshold"),
        "message": message,
    }


class WebhookNotifier:
    """POST each transition as JSON; retry connection errors and 408/429/5xx with exponential backoff."""

    def __init__(
        self,
        url: str,
        *,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        dashboard_url: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.headers = {"User-Agent": "modelyard-monitor", **(headers or {})}
        self.dashboard_url = dashboard_url
        self.sleep = sleep

    def send(self, payload: dict[str, Any]) -> bool:
        """True once the receiver answered 2xx; False after the last retry (the caller retries later)."""
        with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
            for attempt in range(self.retries + 1):
                try:
                    response = client.post(self.url, json=payload)
                    if response.is_success:
                        return True
                    if response.status_code not in RETRY_STATUS:
                        log.warning("webhook %s refused the alert: HTTP %s", self.url, response.status_code)
                        return False
                    reason = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                if attempt < self.retries:
                    delay = min(self.backoff * 2**attempt, self.max_backoff)
                    log.info(
                        "webhook %s failed (%s); retry %d in %.1fs", self.url, reason, attempt + 1, delay
                    )
                    self.sleep(delay)
        log.warning("webhook %s unreachable after %d attempts (%s)", self.url, self.retries + 1, reason)
        return False

    def notify(self, transition: Transition) -> bool:
        return self.send(alert_payload(transition, dashboard_url=self.dashboard_url))
