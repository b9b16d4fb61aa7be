"""The store: everything downsize records, in one SQLAlchemy database (SQLite by default).

:mod:`.schema` holds the tables, :mod:`.store` the :class:`Store` that reads and appends them.
"""

from __future__ import annotations

from .schema import (
    LABEL_ORIGINS,
    LABEL_SOURCES,
    ApiKey,
    Base,
    CalibrationRun,
    EvalRun,
    Example,
    Label,
    MonitorCheckpoint,
    RequestLog,
    Review,
    ReviewCursor,
    ReviewItem,
    ReviewReason,
    SpotCheck,
    StudentVersion,
    TaskEvent,
    TeacherCall,
    dumps,
    text_hash,
    utcnow,
)
from .store import LabelledExample, Store, make_engine

__all__ = [
    "LABEL_ORIGINS",
    "LABEL_SOURCES",
    "ApiKey",
    "Base",
    "CalibrationRun",
    "EvalRun",
    "Example",
    "Label",
    "LabelledExample",
    "MonitorCheckpoint",
    "RequestLog",
    "Review",
    "ReviewCursor",
    "ReviewItem",
    "ReviewReason",
    "SpotCheck",
    "Store",
    "StudentVersion",
    "TaskEvent",
    "TeacherCall",
    "dumps",
    "make_engine",
    "text_hash",
    "utcnow",
]
