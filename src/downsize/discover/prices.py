"""List prices of common models, to put a dollar figure on logged traffic.

These are the providers' **published list prices in USD per 1M tokens at** :data:`PRICE_DATE`
(standard tier: no cached-input, priority or volume discounts; the OpenAI Batch API's 50 %
discount is applied to batch records). Prices change: pass ``prices=`` to override or extend
the table, e.g. ``{"my-model": (0.5, 1.5)}``. A logged cost (LiteLLM ``spend``, downsize
``teacher_cost_usd``) is used as it is when present.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["PRICES", "PRICE_DATE", "Price", "cost", "price_for"]

#: When the list prices below were read.
PRICE_DATE = "2025-07-01"

Price = tuple[float, float]  # ($ per 1M input tokens, $ per 1M output tokens)

#: model (lower case, no provider prefix or date suffix) -> (input, output) $ per 1M tokens
PRICES: dict[str, Price] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-opus": (15.00, 75.00),
    "claude-3-haiku": (0.25, 1.25),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "mistral-large": (2.00, 6.00),
    "mistral-small": (0.10, 0.30),
}

BATCH_DISCOUNT = 0.5
_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4}|@\d+|-latest|:.*)$")


def _canonical(model: str) -> str:
    m = model.strip().lower().rsplit("/", 1)[-1]
    return _DATE_SUFFIX.sub("", m)


def price_for(model: str, prices: Mapping[str, Price] | None = None) -> Price | None:
    """The (input, output) price of ``model``: exact name, else the longest known prefix.

    >>> price_for("openai/gpt-4o-mini-2024-07-18")
    (0.15, 0.6)
    >>> price_for("my-local-llama") is None
    True
    """
    table = {**PRICES, **{k.lower(): v for k, v in (prices or {}).items()}}
    for name in (model.strip().lower(), _canonical(model)):
        if name in table:
            return table[name]
    m = _canonical(model)
    best = max((k for k in table if m.startswith(k)), key=len, default=None)
    return table[best] if best else None


def cost(model: str, input_tokens: float, output_tokens: float, *, batch: bool = False,
         prices: Mapping[str, Price] | None = None) -> float | None:
    """Dollar cost of a call at list prices (``None`` for a model not in the table)."""
    p = price_for(model, prices)
    if p is None:
        return None
    c = (input_tokens * p[0] + output_tokens * p[1]) / 1e6
    return c * BATCH_DISCOUNT if batch else c
