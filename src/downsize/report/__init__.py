"""``downsize report``: savings, quality, latency and energy against teacher-only, on one page.

* :mod:`.build`: :func:`build_report` (reads the store) and :func:`write_report` (HTML / JSON / text);
* :mod:`.compute`: the per-task figures; :mod:`.stats`: intervals and per-label statistics;
* :mod:`.advice`: the "what to do next" rules; :mod:`.energy`: the energy accounting;
* :mod:`.render`: HTML (cards, plots, formatting) and plain text.
"""

from __future__ import annotations

from .build import REPORT_SCHEMA, build_report, to_json, write_report
from .render.html import render_html
from .render.text import render_text

__all__ = ["REPORT_SCHEMA", "build_report", "render_html", "render_text", "to_json", "write_report"]
