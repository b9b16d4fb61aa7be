"""Request and response shapes of the gateway (OpenAI's chat completions, plus predict).

Requests are validated with these models; responses are built as plain dicts on the hot path
(the models document them in the OpenAPI schema). Unknown request fields are allowed: they
are passed through to the teacher for models that are not downsize tasks. The fields OpenAI
types strictly are strict here too (no coercion: ``"stream": "yes"``, ``"temperature": "hot"``,
``"max_tokens": "5"`` are 400s naming the field), whether the request goes to a task or is
passed through.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

__all__ = [
    "ChatMessage",
    "ChatCompletionRequest",
    "ChatCompletion",
    "ChatCompletionChunk",
    "PredictRequest",
    "PredictResult",
    "PredictResponse",
    "ModelCard",
    "ModelList",
    "ErrorBody",
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


#: A JSON number (an int is a number; a bool or a numeric string is not).
Number = Annotated[float, Field(strict=True)]


class ContentPart(_Open):
    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(_Open):
    role: StrictStr = Field(min_length=1, max_length=64)
    content: StrictStr | list[ContentPart] | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]


class StreamOptions(_Open):
    include_usage: StrictBool = False


class ChatCompletionRequest(_Open):
    """``POST /v1/chat/completions``. ``model`` is ``downsize/<task>`` or a pass-through model."""

    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    n: StrictInt | None = Field(default=None, ge=1, le=128, description="downsize tasks answer with one choice.")
    # sampling and the rest: checked as OpenAI checks them, then passed through as sent
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, ge=0, le=1)
    frequency_penalty: Number | None = Field(default=None, ge=-2, le=2)
    presence_penalty: Number | None = Field(default=None, ge=-2, le=2)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    user: StrictStr | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    parallel_tool_calls: StrictBool | None = None


class Message(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: Message
    logprobs: None = None
    finish_reason: str = "stop"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class DownsizeInfo(BaseModel):
    """Extra field on task answers (also in the ``x-downsize-*`` headers)."""

    answered_by: str
    confidence: float | None
    cost_usd: float
    reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    downsize: DownsizeInfo | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, Any]
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class PredictRequest(BaseModel):
    """``POST /v1/tasks/{task}/predict``: up to ``server.max_batch`` texts."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[StrictStr] = Field(min_length=1)


class PredictResult(BaseModel):
    """One input's answer, under the task's answer key (``label``, ``labels``, ``fields`` or
    ``entities``: see :attr:`downsize.tasks.TaskConfig.answer_key`), and how it was answered."""

    model_config = ConfigDict(extra="allow")
    confidence: float | None
    answered_by: str
    latency_ms: float
    cost_usd: float
    error: str | None = None


class PredictResponse(BaseModel):
    id: str
    task: str
    model: str
    results: list[PredictResult]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail
