"""The store: everything downsize records, in one SQLAlchemy database (SQLite by default).

:mod:`.schema` holds the tables, :mod:`.store` the :class:`Store` that reads and appends them.
"""

from __future__ import annotations

from .schema import (
    LABEL_SOURCES,
    ApiKey,
    Base,
    CalibrationRun,
    EvalRun,
    Example,
    Label,
    RequestLog,
    Review,
    ReviewCursor,
    ReviewItem,
    ReviewReason,
    SpotCheck,
    StudentVersion,
    TeacherCall,
    dumps,
    text_hash,
    utcnow,
)
from .store import LabelledExample, Store, make_engine

__all__ = [
    "LABEL_SOURCES",
    "ApiKey",
    "Base",
    "CalibrationRun",
    "EvalRun",
    "Example",
    "Label",
    "LabelledExample",
    "RequestLog",
    "Review",
    "ReviewCursor",
    "ReviewItem",
    "ReviewReason",
    "SpotCheck",
    "Store",
    "StudentVersion",
    "TeacherCall",
    "dumps",
    "make_engine",
    "text_hash",
    "utcnow",
]
