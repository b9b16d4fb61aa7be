"""The fine-tuned torch model → an int8 ONNX file that onnxruntime serves without torch.

1. ``torch.onnx.export`` (the TorchScript exporter: no onnxscript needed) with dynamic batch
   and sequence axes; inputs ``input_ids`` and ``attention_mask`` (int64), output ``logits``;
2. ``onnxruntime.quantization.quantize_dynamic``: 8-bit weights per output channel,
   activations quantised per batch at run time (~4× smaller). Measured on a head that
   amplifies representation errors (300 Rotten Tomatoes texts): per-tensor signed weights on
   the fused graph kept the fp32 label on 91.7 %, per-channel unsigned weights on the plain
   graph on 97.7 % (u8 weights avoid the u8×s8 saturation of AVX2 kernels without VNNI), so
   that is the recipe, and onnxruntime's transformer fusion is not applied.

torch, onnx and onnxruntime are imported inside the function.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ...errors import StudentError

__all__ = ["export_int8", "OPSET", "INPUTS", "OUTPUT"]

OPSET = 17
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logits"


def export_int8(model: Any, *, hidden_size: int = 384, num_heads: int = 12) -> tuple[bytes, bytes, dict[str, Any]]:
    """``(int8 ONNX bytes, fp32 ONNX bytes, notes)`` of ``model`` (a module in eval mode)."""
    import torch

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise StudentError(f"exporting needs {exc.name}: pip install 'downsize[finetune]'") from None
    notes: dict[str, Any] = {"opset": OPSET, "weights": "uint8 per channel (dynamic)"}
    with tempfile.TemporaryDirectory(prefix="downsize-onnx-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        ids = torch.ones((2, 16), dtype=torch.long)
        mask = torch.ones((2, 16), dtype=torch.long)
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's tracer warnings are about shapes we vary
            torch.onnx.export(
                model,
                (ids, mask),
                str(fp32),
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                              OUTPUT: {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        fp32_bytes = fp32.read_bytes()
        src = fp32
        int8 = Path(tmp) / "int8.onnx"
        import onnx

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process is for static quantisation
        try:
            quantize_dynamic(str(src), str(int8), weight_type=QuantType.QUInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            root.setLevel(level)
        return int8.read_bytes(), fp32_bytes, notes
