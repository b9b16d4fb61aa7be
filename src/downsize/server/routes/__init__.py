"""The gateway's routers, one per area."""

from . import chat, models, ops, tasks

__all__ = ["chat", "models", "ops", "tasks"]
