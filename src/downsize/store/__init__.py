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
    "Store",
    "LabelledExample",
    "make_engine",
    "Base",
    "Example",
    "TeacherCall",
    "Label",
    "StudentVersion",
    "CalibrationRun",
    "EvalRun",
    "RequestLog",
    "SpotCheck",
    "ApiKey",
    "ReviewItem",
    "ReviewReason",
    "Review",
    "ReviewCursor",
    "TaskEvent",
    "MonitorCheckpoint",
    "LABEL_SOURCES",
    "LABEL_ORIGINS",
    "dumps",
    "text_hash",
    "utcnow",
]
