"""The exceptions downsize raises.

Every error derives from one root, so callers can catch ``DownsizeError``.
Errors are mapped to HTTP status codes or CLI exit codes only at the edges
(``server``, ``cli``)::

    DownsizeError
    ├── ConfigError                 bad downsize.yaml: names the file, line and key
    ├── DataError                   bad input data: names the file, row and column
    ├── StoreError                  the store cannot be opened or is inconsistent
    ├── AnswerError                 an answer that does not fit the task (says which part and why)
    ├── TeacherError                anything that went wrong talking to the teacher
    │   ├── TeacherTimeout          no answer within the timeout, after retries
    │   ├── TeacherStatusError      the server said no (status, body), after retries
    │   └── TeacherResponseError    an answer that is not one of the labels
    ├── BudgetExceeded              the next call would exceed the dollar budget
    ├── StudentError                a student cannot be trained, saved or loaded
    │   ├── NotFittedError          predict before fit
    │   └── CorruptArtifactError    a student file whose checksum does not match
    ├── CalibrationError            calibration impossible or not done
    │   └── NotCalibratedError      the task has no calibrated threshold yet
    ├── MonitorError                a live monitor got a bad loss/confidence or a corrupt saved state
    └── LifecycleError              a version cannot be promoted (gate, files, a concurrent change)
"""

from __future__ import annotations

__all__ = [
    "DownsizeError",
    "ConfigError",
    "DataError",
    "StoreError",
    "AnswerError",
    "TeacherError",
    "TeacherTimeout",
    "TeacherStatusError",
    "TeacherResponseError",
    "BudgetExceeded",
    "StudentError",
    "NotFittedError",
    "CorruptArtifactError",
    "CalibrationError",
    "NotCalibratedError",
    "MonitorError",
    "LifecycleError",
]


class DownsizeError(Exception):
    """Root of every error downsize raises on purpose."""


class ConfigError(DownsizeError):
    """The configuration is invalid; the message names the file, line and key."""


class DataError(DownsizeError):
    """An input data file is invalid; the message names the file, row and column."""


class StoreError(DownsizeError):
    """The store cannot be opened, or holds something inconsistent."""


class AnswerError(DownsizeError, ValueError):
    """An answer (the teacher's, a file's, a reviewer's) that does not fit the task's answer type:
    a label outside the set, a field of the wrong type, a value that is not in the text..."""


class TeacherError(DownsizeError):
    """The teacher could not give a usable answer."""


class TeacherTimeout(TeacherError):
    """The teacher did not answer within the timeout, after all retries."""


class TeacherStatusError(TeacherError):
    """The teacher answered with an HTTP error status, after all retries."""

    def __init__(self, status: int, body: str, message: str | None = None) -> None:
        self.status = status
        self.body = body
        super().__init__(message or f"teacher answered HTTP {status}: {body[:300]}")


class TeacherResponseError(TeacherError):
    """The teacher's answer could not be mapped to one configured label."""

    def __init__(self, message: str, raw: str = "") -> None:
        self.raw = raw
        super().__init__(message)


class BudgetExceeded(DownsizeError):
    """The next teacher call would take the spend past the budget."""


class StudentError(DownsizeError):
    """A student cannot be trained, saved or loaded."""


class NotFittedError(StudentError, ValueError):
    """A student (or calibrator) was used before ``fit``."""


class CorruptArtifactError(StudentError):
    """A saved student's files do not match the checksum in its manifest."""


class CalibrationError(DownsizeError):
    """A threshold cannot be calibrated (too little data, no qualifying threshold...)."""


class NotCalibratedError(CalibrationError):
    """The task has no calibrated threshold yet: run ``downsize calibrate`` first."""


class MonitorError(DownsizeError, ValueError):
    """A live risk / drift monitor was given an invalid parameter, loss or confidence, or a
    saved state that does not describe a monitor; the message names the field and the value."""


class LifecycleError(DownsizeError):
    """A task's live version could not be changed: the candidate failed the promotion gate, its
    files are corrupt, nothing to roll back to, or another process changed the task meanwhile;
    the message says which, with the numbers, and what is live now."""
