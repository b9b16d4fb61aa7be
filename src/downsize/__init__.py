"""downsize: distil routine LLM calls into small local models that answer only when they may.

The public API, in the order data flows through it::

    config (task kinds) → teacher → data → students → calibration → cascade → audit → report

Importing ``downsize`` has no side effects: no clients, engines, models or network, and no
web framework (the replay teacher and the gateway live in ``downsize.replay`` and ``downsize.server``).
"""

from __future__ import annotations

from .calibration import ThresholdCalibrator, clopper_pearson
from .cascade import AnsweredBy, Cascade, Decision, Policy
from .config import ClassifyTask, Config, TaskConfig, TeacherConfig, load_config, write_template
from .data import TextData, read_texts
from .errors import (
    BudgetExceeded,
    CalibrationError,
    ConfigError,
    CorruptArtifactError,
    DataError,
    DownsizeError,
    NotCalibratedError,
    NotFittedError,
    StoreError,
    StudentError,
    TeacherError,
    TeacherResponseError,
    TeacherStatusError,
    TeacherTimeout,
)
from .project import PredictSummary, Project
from .store import Store
from .students import MiniLMStudent, TfidfStudent, load_student
from ._version import __version__ as __version__
from .teacher import AsyncTeacher, Budget, RetryPolicy

__all__ = [
    "AnsweredBy",
    "AsyncTeacher",
    "Budget",
    "BudgetExceeded",
    "CalibrationError",
    "Cascade",
    "ClassifyTask",
    "Config",
    "ConfigError",
    "CorruptArtifactError",
    "DataError",
    "Decision",
    "DownsizeError",
    "MiniLMStudent",
    "NotCalibratedError",
    "NotFittedError",
    "Policy",
    "PredictSummary",
    "Project",
    "RetryPolicy",
    "Store",
    "StoreError",
    "StudentError",
    "TaskConfig",
    "TeacherConfig",
    "TeacherError",
    "TeacherResponseError",
    "TeacherStatusError",
    "TeacherTimeout",
    "TextData",
    "TfidfStudent",
    "ThresholdCalibrator",
    "clopper_pearson",
    "load_config",
    "load_student",
    "read_texts",
    "write_template",
]
