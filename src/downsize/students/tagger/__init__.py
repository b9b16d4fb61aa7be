"""The extraction student: a linear-chain CRF that learns a teacher's fields or entity mentions.

:class:`TaggerStudent` (:mod:`._student`) and its parts: :mod:`.spans` (tokens with offsets,
decoding tags back to values), :mod:`.align` (teacher values onto tokens), :mod:`.features`
(generic token features), :mod:`.crf` (inference on crfsuite's weights), :mod:`.inference`
(answers and their probabilities), :mod:`.confidence` (the stacked record confidence),
:mod:`.checks` (per-field checks from the task), :mod:`.persist` (saving without pickle).
"""

from __future__ import annotations

from ._student import TaggerStudent, same_answer

__all__ = ["TaggerStudent", "same_answer"]
