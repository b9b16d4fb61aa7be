"""The fine-tuned torch model → an int8 ONNX file that onnxruntime serves without torch.

1. ``torch.onnx.export`` (the TorchScript exporter: no onnxscript needed) with dynamic batch
   and sequence axes; inputs ``input_ids`` and ``attention_mask`` (int64), output ``logits``;
2. onnxruntime's transformer optimiser fuses attention, LayerNorm and GELU for BERT-like
   graphs (skipped with a note when it cannot: the plain graph is still correct);
3. ``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations quantised per
   batch at run time (the usual recipe for CPU transformers, ~4× smaller, 2–3× faster).

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
    notes: dict[str, Any] = {"opset": OPSET}
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
        try:
            from onnxruntime.transformers.optimizer import optimize_model

            opt = optimize_model(str(fp32), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                 opt_level=1, use_gpu=False)
            fused = Path(tmp) / "fused.onnx"
            opt.save_model_to_file(str(fused))
            notes["fused"] = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
            src = fused
        except Exception as exc:  # the optimiser is best-effort: any failure leaves the plain graph
            notes["fused"] = f"not fused ({type(exc).__name__}: {exc})"
        int8 = Path(tmp) / "int8.onnx"
        import onnx

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process is for static quantisation
        try:
            quantize_dynamic(str(src), str(int8), weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            root.setLevel(level)
        return int8.read_bytes(), fp32_bytes, notes
