"""The multi-label student (``kind: multilabel``): every label from a fixed set that applies.

:class:`MultiLabelStudent` (:mod:`._student`) and its parts: :mod:`.features` (the TF-IDF
vectorisers or the MiniLM encoder the other students use), :mod:`.heads` (one-vs-rest linear
heads, out-of-fold scores, Platt scaling per label), :mod:`.decode` (label-set decoding per loss
and the stacked record confidence).
"""

from __future__ import annotations

from ._student import MultiLabelStudent

__all__ = ["MultiLabelStudent"]
