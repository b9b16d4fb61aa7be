"""The gateway (``downsize serve``): an OpenAI-compatible endpoint that runs each task's cascade.

Point the OpenAI SDK at it (``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=KEY)``) and
ask for ``model="downsize/<task>"``: the task's student answers when its confidence clears
the calibrated threshold, the teacher otherwise; every decision is in the audit log. Any
other model is passed through to the default teacher.

Routes: ``POST /v1/chat/completions``, ``POST /v1/tasks/{task}/predict``, ``GET /v1/models``,
``GET /healthz``, ``GET /metrics``.
"""

from ._app import create_app
from ._run import ServerThread, serve

__all__ = ["create_app", "serve", "ServerThread"]
