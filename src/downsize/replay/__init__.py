"""The replay teacher: an OpenAI-compatible server that answers with recorded labels.

It plays the large model from a labelled file, so the whole pipeline runs offline and quality
figures mean "agreement with the teacher". :mod:`.app` is the server (the prompt protocol, latency,
errors, noise, ``GET /stats``); :mod:`.run` runs it in a thread, a child process or the foreground.
Like :mod:`downsize.server`, this is an edge of the package: nothing in the data flow imports it.
"""

from __future__ import annotations

from .app import create_replay_app, load_records
from .run import ReplayProcess, ReplayServer, serve_replay

__all__ = ["ReplayProcess", "ReplayServer", "create_replay_app", "load_records", "serve_replay"]
