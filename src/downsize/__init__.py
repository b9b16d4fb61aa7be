"""downsize: distil routine LLM calls into small local models that answer only when they may."""

from __future__ import annotations

__version__ = "0.1.0"
