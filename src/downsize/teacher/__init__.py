"""The teacher: the large model behind any OpenAI-compatible endpoint.

* :mod:`.client`: :class:`AsyncTeacher`: one logical call, a task's answer through its schema,
  strict parsing by the task's kind, one repair;
* :mod:`.retry`: which failures are retried, and how patiently; :mod:`.completion`: reading the answer;
* :mod:`.cache`: the content-addressed record of paid calls (nothing is paid for twice);
* :mod:`.budget`: the dollar budget shared by concurrent calls (and by every process: :class:`SharedBudget`);
* :mod:`.prompt`: the prompt protocol shared with the replay teacher and the gateway.
"""

from __future__ import annotations

from .budget import Budget, Reservation, SharedBudget
from .answer import TeacherAnswer
from .client import AsyncTeacher
from .completion import ChatResult
from .prompt import build_messages
from .retry import RetryPolicy

__all__ = ["AsyncTeacher", "Budget", "ChatResult", "Reservation", "RetryPolicy", "SharedBudget", "TeacherAnswer", "build_messages"]
