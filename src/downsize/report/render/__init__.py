"""Renderings of a report: self-contained HTML (:mod:`.html`, :mod:`.cards`, :mod:`.plots`,
:mod:`.format`) and plain text (:mod:`.text`)."""
