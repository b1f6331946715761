"""Lifecycle events as a stream (listen_events) and webhooks delivered from it.
May import: core.api and everything below it."""


from core.events.stream import EVENTS, listen_events, to_event

__all__ = ["EVENTS", "listen_events", "to_event"]
