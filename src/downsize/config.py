"""``downsize.yaml``: typed configuration with errors that name the file, line and key.

The config is the top of the data flow (config → teacher → dataset → student →
calibration → cascade → log → report); it imports only :mod:`downsize.errors` and the task
kinds of :mod:`downsize.tasks`, each of which owns its section of a task.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError
from .tasks import KINDS, ClassifyTask, TaskConfig, TaskSection

__all__ = [
    "Config",
    "TeacherConfig",
    "TaskConfig",
    "ClassifyTask",
    "ServerConfig",
    "EnergyConfig",
    "Settings",
    "load_config",
    "write_template",
    "DEFAULT_STORE_URL",
]

DEFAULT_STORE_URL = "sqlite:///.downsize/downsize.db"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeacherConfig(_Strict):
    """One OpenAI-compatible endpoint that plays the large model."""

    base_url: str = Field(description="Base URL ending in /v1, e.g. https://api.openai.com/v1")
    model: str
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable that holds the API key."
    )
    price_per_1m_input: float = Field(default=0.0, ge=0)
    price_per_1m_output: float = Field(default=0.0, ge=0)
    max_concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    max_tokens: int = Field(default=64, ge=1, description="Cap on the answer's length.")
    structured_output: bool = Field(
        default=True, description="Send a JSON schema (response_format); off for servers without it."
    )
    energy_wh_per_1k_tokens: float | None = Field(
        default=None,
        ge=0,
        description="Energy per 1k tokens for this teacher; None uses energy.teacher_wh_per_1k_tokens.",
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    def api_key(self) -> str | None:
        """The key from the environment, read when needed and never stored or logged."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Dollar cost of one call from its token counts and the configured prices."""
        return (input_tokens * self.price_per_1m_input + output_tokens * self.price_per_1m_output) / 1e6


class ServerConfig(_Strict):
    """The gateway (``downsize serve``)."""

    default_teacher: str = "default"
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_batch: int = Field(default=256, ge=1)
    rate_limit_per_minute: int = Field(default=6000, ge=1)
    deadline_s: float = Field(default=10.0, gt=0)
    lifecycle_interval_s: float = Field(
        default=2.0, gt=0,
        description="How often each worker reads the live monitors, suspends, and picks up a promoted version.",
    )
    log_passthrough_text: bool = Field(
        default=False,
        description="Keep the last user message and the answer of pass-through requests in the audit log "
        "(off: only their hash; pass-through prompts belong to no task with its own log_text).",
    )


class EnergyConfig(_Strict):
    """Assumptions behind the energy figures; every one can be overridden."""

    cpu_watts_per_core: float = Field(default=15.0, gt=0)
    teacher_wh_per_1k_tokens: float = Field(default=0.3, ge=0)


class Config(_Strict):
    """The whole ``downsize.yaml``."""

    store: str = DEFAULT_STORE_URL
    home: str = Field(default=".downsize", description="Directory for student files and caches.")
    teachers: dict[str, TeacherConfig] = Field(default_factory=dict)
    tasks: dict[str, TaskSection] = Field(default_factory=dict)  # type: ignore[valid-type]
    server: ServerConfig = Field(default_factory=ServerConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    base_dir: Path = Field(default=Path("."), exclude=True, description="Where relative paths start.")

    @model_validator(mode="after")
    def _references(self) -> Config:
        for name in [*self.teachers, *self.tasks]:
            if not _NAME.match(name):
                raise ValueError(f"name {name!r} must match {_NAME.pattern}")
        for tname, task in self.tasks.items():
            if task.teacher not in self.teachers:
                known = ", ".join(self.teachers) or "none"
                raise ValueError(
                    f"tasks.{tname}.teacher is {task.teacher!r}, which is not under teachers "
                    f"(defined: {known})"
                )
        return self

    # -- derived paths -------------------------------------------------------------
    def store_url(self) -> str:
        """The store URL with a relative SQLite path resolved against :attr:`base_dir`."""
        prefix = "sqlite:///"
        if self.store.startswith(prefix) and not self.store.startswith(prefix + "/"):
            rel = self.store[len(prefix) :]
            if rel and rel != ":memory:":
                return prefix + str((self.base_dir / rel).resolve())
        return self.store

    def home_dir(self) -> Path:
        p = Path(self.home)
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def task(self, name: str) -> TaskConfig:
        """The task called ``name``, or a ConfigError that lists the tasks there are."""
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise ConfigError(f"no task {name!r} in the config (tasks: {known})") from None

    def teacher_for(self, task: str) -> TeacherConfig:
        return self.teachers[self.task(task).teacher]


class Settings(BaseSettings):
    """Process-level settings from the environment (prefix ``DOWNSIZE_``)."""

    model_config = SettingsConfigDict(env_prefix="DOWNSIZE_", extra="ignore")
    config: Path = Path("downsize.yaml")


# ---------------------------------------------------------------------------------
# loading with line numbers
# ---------------------------------------------------------------------------------
def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The deepest YAML node along a pydantic error location (for its line number)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    node = v if part != loc[-1] else k
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate ``downsize.yaml``.

    Raises
    ------
    ConfigError
        With ``file:line``, the dotted key and what was expected, for a missing file,
        malformed YAML, an unknown key or a bad value.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file (create one with `downsize init`)")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping at the top level, got {type(data).__name__}")
    data.pop("base_dir", None)
    try:
        return Config.model_validate({**data, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p not in ("function-after",))
            if len(loc) > 2 and loc[0] == "tasks" and loc[2] in KINDS:  # the union's tag, not a key
                loc = loc[:2] + loc[3:]
            node = _node_at(root, loc)
            line = node.start_mark.line + 1 if node is not None else 1
            key = ".".join(str(p) for p in loc) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; `downsize init` writes a commented template)"
            lines.append(f"{path}:{line}: {key}: {msg}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


_HEADER = """\
# downsize.yaml: what downsize distils, from which teacher, and how safely.
# Relative paths are relative to this file.

# Where everything is recorded (SQLAlchemy URL). SQLite by default.
store: sqlite:///.downsize/downsize.db
# Student files and caches.
home: .downsize

teachers:
  default:
    # Any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, llama.cpp server, LiteLLM.
    base_url: https://api.openai.com/v1
    model: gpt-4o
    api_key_env: OPENAI_API_KEY      # the variable's name; the key itself never goes here
    price_per_1m_input: 2.50         # $ per 1M input tokens (list price)
    price_per_1m_output: 10.00       # $ per 1M output tokens
    max_concurrency: 16              # calls in flight at once
    timeout_s: 30
    max_retries: 4                   # on 429, 5xx and timeouts, with backoff and jitter

"""

_TASKS = {
    "classify": """\
tasks:
  tickets:
    kind: classify
    teacher: default
    instructions: Route the support ticket to the team that should handle it.
    labels:
      billing: invoices, refunds, payment failures
      technical: bugs, errors, outages
      account: login, password, profile changes
    text_field: text                 # column that holds the text in your data files
    alpha: 0.02                      # the student may disagree with the teacher on at most 2 %...
    delta: 0.05                      # ...of what it answers, with 95 % confidence
    bound: hoeffding_bentkus         # or binomial (exact; a little less conservative)
    student: auto                    # auto | tfidf | minilm | ensemble (auto tries each and their ensemble)
    calibration_folds: 3             # cross-fit: every label trains and calibrates; 0 holds out a split
    mode: cascade                    # cascade | shadow (teacher answers, student learns)
    spot_check_rate: 0.02            # share of student answers re-checked by the teacher
    log_text: true                   # false keeps only a hash of each request's text
    reference: teacher               # or human: calibrate against reviewers' labels once there are enough
    review_sample_rate: 0.01         # share of answers sampled at random for `downsize review`

""",
    "multilabel": """\
tasks:
  packages:
    kind: multilabel
    teacher: default
    instructions: Tag the software package with every area its description touches.
    labels:
      network::server: runs a network service
      devel::library: a library for developers
      use::organizing: helps organise information
    max_labels: 5                    # at most this many labels per text
    loss: exact                      # exact: any label differs | f1: 1 - F1 of the label set
    text_field: text
    alpha: 0.10                      # answered records may differ from the teacher on at most 10 %...
    delta: 0.05                      # ...(mean loss), with 95 % confidence
    student: auto                    # auto | tfidf | minilm (one-vs-rest heads)
    mode: cascade
    spot_check_rate: 0.02
    log_text: true

""",
    "extract": """\
tasks:
  addresses:
    kind: extract
    teacher: default
    instructions: Pull the parts of the postal address out of the text.
    fields:                          # or `entities:` (type -> description) for a list of mentions
      AddressNumber: {description: the house number, type: string}
      StreetName: the street's name
      ZipCode: {type: string, pattern: "\\\\d{5}(-\\\\d{4})?"}
      # Amount: {type: number}  |  Due: {type: date}  |  Unit: {type: enum, values: [kg, lb]}
      #   (add `required: true` to reject an answer without the field)
    loss: exact                      # exact: any field differs | f1: 1 - F1 of the (field, value) pairs
    text_field: text
    alpha: 0.05
    delta: 0.05
    student: auto                    # auto | crf (a linear-chain CRF tagger)
    mode: cascade
    spot_check_rate: 0.02
    log_text: true

""",
}

_FOOTER = """\
server:
  default_teacher: default           # where unknown models are passed through
  rate_limit_per_minute: 6000        # per API key
"""

TEMPLATE = _HEADER + _TASKS["classify"] + _FOOTER


def write_template(path: str | os.PathLike[str], *, kind: str = "classify", overwrite: bool = False) -> Path:
    """Write the commented template for a task of ``kind``; refuses to overwrite an existing file."""
    path = Path(path)
    if kind not in _TASKS:
        raise ConfigError(f"no template for kind {kind!r}; kinds: {', '.join(_TASKS)}")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; not overwriting it")
    path.write_text(_HEADER + _TASKS[kind] + _FOOTER, encoding="utf-8")
    return path
