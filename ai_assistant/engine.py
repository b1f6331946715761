"""Who answers AI requests: an OpenAI-compatible chat-completions API, or the local engine.

With ``AI_BASE_URL`` set, requests go to ``{AI_BASE_URL}/chat/completions`` with ``AI_API_KEY``
and ``AI_MODEL`` (timeouts and back-off from core.http). Without it, a deterministic local
engine answers, so the demo and tests work offline; every result says which engine answered.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import requests

from core.config import get_settings
from core.http import UpstreamError, request_with_backoff

logger = logging.getLogger(__name__)

CATEGORIES = ("lead", "support", "billing", "meeting", "other")
_RULES = [
    ("billing", re.compile(r"\b(invoice|payment|refund|billing|receipt)\b", re.I)),
    ("lead", re.compile(r"\b(quote|pricing|price|demo|interested|proposal)\b", re.I)),
    ("support", re.compile(r"\b(error|bug|broken|help|issue|problem)\b", re.I)),
    ("meeting", re.compile(r"\b(meeting|call|schedule|calendar|tomorrow)\b", re.I)),
]


def local_classify(text: str) -> str:
    for category, pattern in _RULES:
        if pattern.search(text):
            return category
    return "other"


def _chat(messages: list[dict[str, str]]) -> str:
    settings = get_settings()
    response = request_with_backoff(
        requests.Session(), "POST", settings.ai_base_url.rstrip("/") + "/chat/completions",
        headers={"Authorization": f"Bearer {settings.ai_api_key}"},
        json={"model": settings.ai_model, "messages": messages, "temperature": 0},
    )
    if response.status_code != 200:
        raise UpstreamError(f"AI provider answered {response.status_code}: {response.text[:200]}", response.status_code)
    try:
        return response.json()["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UpstreamError(f"AI provider sent an unexpected body: {response.text[:200]}") from exc


def answer(prompt: str) -> dict[str, Any]:
    """Answer a user's prompt."""
    if not get_settings().ai_base_url:
        words = len(prompt.split())
        return {"engine": "local", "answer": f"[local engine] {words} words received; topic: {local_classify(prompt)}"}
    content = _chat([{"role": "system", "content": "You are Fikiri's email assistant."},
                     {"role": "user", "content": prompt}])
    return {"engine": get_settings().ai_model, "answer": content}


def classify(text: str) -> dict[str, str]:
    """One of CATEGORIES for an email's text."""
    if not get_settings().ai_base_url:
        return {"engine": "local", "category": local_classify(text)}
    content = _chat([{"role": "system", "content": "Classify the email as exactly one word, one of: "
                                                   + ", ".join(CATEGORIES)},
                     {"role": "user", "content": text}]).strip().lower()
    category = next((c for c in CATEGORIES if c in content), "other")
    return {"engine": get_settings().ai_model, "category": category}
