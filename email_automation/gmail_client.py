"""A small Gmail REST client on ``requests``: list, get metadata, history, token refresh.

It speaks the real API (``GMAIL_API_BASE_URL``, default https://gmail.googleapis.com) and, in
tests and the demo, the loopback fake in :mod:`email_automation.fake_gmail`. A 401 refreshes the
access token once with the refresh token; 429/5xx back off (core.platform.http).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import requests

from core.config import get_settings
from core.platform.http import UpstreamError, request_with_backoff

logger = logging.getLogger(__name__)

HEADERS_WANTED = ("Subject", "From", "Date")


class GmailAuthError(RuntimeError):
    """The account's tokens are no longer accepted: it must be reconnected."""


class HistoryExpiredError(RuntimeError):
    """Gmail no longer has history from that id (404): a full sync is needed."""


class GmailClient:
    def __init__(self, access_token: str, refresh_token: str,
                 on_token_refresh: Callable[[str], None] | None = None) -> None:
        settings = get_settings()
        self.base = settings.gmail_api_base_url.rstrip("/") + "/gmail/v1/users/me"
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.on_token_refresh = on_token_refresh
        self.session = requests.Session()

    def _get(self, path: str, params: dict[str, Any] | None = None, refreshed: bool = False) -> dict[str, Any]:
        response = request_with_backoff(self.session, "GET", self.base + path, params=params,
                                        headers={"Authorization": f"Bearer {self.access_token}"})
        if response.status_code == 401 and not refreshed:
            self.refresh()
            return self._get(path, params, refreshed=True)
        if response.status_code == 401:
            raise GmailAuthError("Gmail rejected the refreshed token; the account must be reconnected")
        if response.status_code == 404 and path == "/history":
            raise HistoryExpiredError("history id too old")
        if response.status_code >= 400:
            raise UpstreamError(f"Gmail GET {path} answered {response.status_code}: {response.text[:200]}",
                                response.status_code)
        return response.json()

    def refresh(self) -> None:
        settings = get_settings()
        response = request_with_backoff(self.session, "POST", settings.gmail_token_url, data={
            "grant_type": "refresh_token", "refresh_token": self.refresh_token,
            "client_id": settings.gmail_client_id, "client_secret": settings.gmail_client_secret})
        if response.status_code != 200 or "access_token" not in response.json():
            raise GmailAuthError(f"token refresh failed with {response.status_code}: {response.text[:200]}")
        self.access_token = response.json()["access_token"]
        logger.info("Gmail access token refreshed")
        if self.on_token_refresh:
            self.on_token_refresh(self.access_token)

    def list_message_ids(self, query: str | None = None) -> Iterator[str]:
        """Every message id matching ``query``, following nextPageToken."""
        params: dict[str, Any] = {"maxResults": get_settings().gmail_page_size}
        if query:
            params["q"] = query
        while True:
            page = self._get("/messages", params)
            for message in page.get("messages", []):
                yield message["id"]
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    def history_message_ids(self, start_history_id: str) -> tuple[list[str], str | None]:
        """Ids of messages added since ``start_history_id``, and the newest history id."""
        params: dict[str, Any] = {"startHistoryId": start_history_id, "historyTypes": "messageAdded"}
        ids: list[str] = []
        newest = None
        while True:
            page = self._get("/history", params)
            newest = page.get("historyId", newest)
            for record in page.get("history", []):
                for added in record.get("messagesAdded", []):
                    ids.append(added["message"]["id"])
            token = page.get("nextPageToken")
            if not token:
                return list(dict.fromkeys(ids)), newest
            params["pageToken"] = token

    def get_metadata(self, message_id: str) -> dict[str, Any]:
        data = self._get(f"/messages/{message_id}", [("format", "metadata"),
                                                      *(("metadataHeaders", h) for h in HEADERS_WANTED)])
        headers = {h["name"]: h["value"] for h in data.get("payload", {}).get("headers", [])}
        return {"id": data["id"], "thread_id": data.get("threadId", ""), "snippet": data.get("snippet", ""),
                "subject": headers.get("Subject", ""), "sender": headers.get("From", ""),
                "internal_date": float(data["internalDate"]) / 1000 if data.get("internalDate") else None,
                "history_id": data.get("historyId")}

    def profile_history_id(self) -> str | None:
        return self._get("/profile").get("historyId")
