"""The store: everything downsize records, in one SQLAlchemy database (SQLite by default).

:mod:`.schema` holds the tables, :mod:`.store` the :class:`Store` that reads and appends them.
"""

from __future__ import annotations

from .schema import (
    LABEL_SOURCES,
    ApiKey,
    Base,
    CallClaim,
    CalibrationRun,
    EvalRun,
    Example,
    Label,
    RequestLog,
    Review,
    ReviewCursor,
    ReviewItem,
    ReviewReason,
    SpendLedger,
    SpotCheck,
    StudentVersion,
    TeacherCall,
    dumps,
    text_hash,
    utcnow,
)
from .claims import BUSY, CLAIMED, RECLAIMED, RECORDED, new_owner, owner_alive
from .store import LabelledExample, Store, make_engine

__all__ = [
    "Store",
    "LabelledExample",
    "make_engine",
    "Base",
    "Example",
    "TeacherCall",
    "CallClaim",
    "SpendLedger",
    "new_owner",
    "owner_alive",
    "CLAIMED",
    "RECLAIMED",
    "RECORDED",
    "BUSY",
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
    "LABEL_SOURCES",
    "dumps",
    "text_hash",
    "utcnow",
]
