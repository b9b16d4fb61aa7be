"""The fine-tuned student: all-MiniLM-L6-v2 trained end to end on the teacher's labels (CPU),
served as int8 ONNX by onnxruntime, without torch.

:class:`FinetuneStudent` (:mod:`._student`) and its parts: :mod:`.train` (the torch loop:
length-bucketed batches, dynamic padding, early stopping on held-out agreement, a progress
bar with ETA), :mod:`.export` (ONNX export, fusion, int8 quantisation) and :mod:`.runtime`
(onnxruntime serving, temperature calibration, parity figures). Training needs the
``[finetune]`` extra; loading and predicting only ``[minilm]``.
"""

from __future__ import annotations

from ._student import FinetuneStudent
from .train import finetune_available

__all__ = ["FinetuneStudent", "finetune_available"]
