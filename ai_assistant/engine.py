"""Who answers AI requests: an OpenAI-compatible chat-completions API, or the local engine.

With ``AI_BASE_URL`` set, requests go to ``{AI_BASE_URL}/chat/completions`` with ``AI_API_KEY``
and ``AI_MODEL`` (timeouts and back-off from core.platform.http). Without it, a deterministic local
engine answers, so the demo and tests work offline; every result says which engine answered.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import requests

from core.config import get_settings
from core.platform.aio_http import arequest_with_backoff, async_client
from core.platform.http import UpstreamError, request_with_backoff

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


async def _achat(messages: list[dict[str, str]]) -> str:
    """:func:`_chat` awaited on the event loop (core.platform.aio_http): an async task waiting on the
    provider holds no thread."""
    settings = get_settings()
    async with async_client() as client:
        response = await arequest_with_backoff(
            client, "POST", settings.ai_base_url.rstrip("/") + "/chat/completions",
            # no key, no header: httpx refuses "Bearer " with nothing after it (a local provider needs none)
            headers={"Authorization": f"Bearer {settings.ai_api_key}"} if settings.ai_api_key else {},
            json={"model": settings.ai_model, "messages": messages, "temperature": 0},
        )
    if response.status_code != 200:
        raise UpstreamError(f"AI provider answered {response.status_code}: {response.text[:200]}", response.status_code)
    try:
        return response.json()["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UpstreamError(f"AI provider sent an unexpected body: {response.text[:200]}") from exc


async def aanswer(prompt: str) -> dict[str, Any]:
    """:func:`answer` for async tasks: the same result, the provider awaited."""
    if not get_settings().ai_base_url:
        return answer(prompt)  # the local engine does not wait on anything
    content = await _achat([{"role": "system", "content": "You are Fikiri's email assistant."},
                            {"role": "user", "content": prompt}])
    return {"engine": get_settings().ai_model, "answer": content}


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


# --- per-thread analysis: summary, sentiment, reply draft, task extraction ---------------------
# A thread is a list of messages, oldest first: {"sender": ..., "subject": ..., "body": ...}.
SENTIMENTS = ("positive", "neutral", "negative")
THREAD_TASKS = ("summarize", "sentiment", "reply", "tasks")
_POSITIVE = re.compile(r"\b(thanks?|thank you|great|glad|happy|love|appreciate[ds]?|excellent|perfect|"
                       r"wonderful|awesome|pleased|good)\b", re.I)
_NEGATIVE = re.compile(r"\b(angry|disappointed|broken|bad|terrible|awful|unacceptable|frustrat\w*|complain\w*|"
                       r"refund|cancel|worst|problem|issue|error|fail\w*|still not|overdue|urgent)\b", re.I)
_ACTION = re.compile(r"\b(please|could you|can you|would you|need to|needs to|make sure|don't forget|"
                     r"remember to|let me know|kindly)\b", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def thread_text(messages: list[dict[str, str]]) -> str:
    """The thread as plain text for a prompt, oldest message first."""
    return "\n\n".join(f"From: {m['sender']}\nSubject: {m['subject']}\n{m['body']}" for m in messages)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _name(sender: str) -> str:
    """'Ada Lovelace <ada@example.com>' -> 'Ada'; 'bob@example.com' -> 'bob'."""
    display = sender.split("<")[0].strip().strip('"')
    if not display or "@" in display:
        display = sender.strip("<> ").split("@")[0]
    return display.split()[0] if display.split() else "there"


def local_summary(messages: list[dict[str, str]]) -> str:
    senders = list(dict.fromkeys(_name(m["sender"]) for m in messages))
    latest = _sentences(messages[-1]["body"])
    gist = f": {latest[0]}" if latest else ""
    count = f"{len(messages)} message{'s' if len(messages) != 1 else ''}"
    return f"{count} from {', '.join(senders)} about \"{messages[0]['subject']}\"{gist}"[:500]


def local_sentiment(text: str) -> str:
    score = len(_POSITIVE.findall(text)) - len(_NEGATIVE.findall(text))
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def local_reply(messages: list[dict[str, str]]) -> str:
    last = messages[-1]
    topic = local_classify(thread_text(messages))
    next_step = {"billing": "I am looking into the billing question and will follow up shortly.",
                 "lead": "I would be glad to share pricing and set up a demo.",
                 "support": "I am sorry for the trouble; we are looking into it now.",
                 "meeting": "That time works for me; I will send a calendar invite."}.get(
        topic, "I will get back to you soon.")
    return f"Hi {_name(last['sender'])},\n\nThanks for your message about \"{last['subject']}\". {next_step}\n\nBest regards"


def local_tasks(messages: list[dict[str, str]]) -> list[str]:
    found = [s for m in messages for s in _sentences(m["body"]) if _ACTION.search(s)]
    return list(dict.fromkeys(found))[:10]


def _parse_sentiment(content: str) -> str:
    lowered = content.lower()
    hits = [(lowered.find(label), label) for label in SENTIMENTS if label in lowered]
    return min(hits)[1] if hits else "neutral"


def _parse_tasks(content: str) -> list[str]:
    items = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in content.splitlines()]
    return [item for item in items if item and item.lower().rstrip(".") != "none"][:10]


_PROMPTS = {
    "summarize": "Summarize this email thread in at most three sentences.",
    "sentiment": "Classify the overall sentiment of this email thread as exactly one word: positive, neutral "
                 "or negative.",
    "reply": "Draft a short, polite reply to the last message of this email thread. Answer with the reply text only.",
    "tasks": "List the action items this email thread asks of the recipient, one per line starting with '- '. "
             "Answer 'none' if there are none.",
}


def analyze_thread(task: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """One of THREAD_TASKS on a thread: ``{"engine", <task>: value}`` (summary and reply are text,
    sentiment one of SENTIMENTS, tasks a list of strings)."""
    if task not in THREAD_TASKS:
        raise ValueError(f"unknown AI thread task {task!r}; accepted: {', '.join(THREAD_TASKS)}")
    if not messages:
        raise ValueError("a thread needs at least one message")
    if not get_settings().ai_base_url:
        local = {"summarize": lambda: local_summary(messages),
                 "sentiment": lambda: local_sentiment(thread_text(messages)),
                 "reply": lambda: local_reply(messages), "tasks": lambda: local_tasks(messages)}
        return {"engine": "local", task: local[task]()}
    content = _chat([{"role": "system", "content": _PROMPTS[task]},
                     {"role": "user", "content": thread_text(messages)}]).strip()
    value: Any = {"sentiment": _parse_sentiment, "tasks": _parse_tasks}.get(task, lambda c: c)(content)
    return {"engine": get_settings().ai_model, task: value}
