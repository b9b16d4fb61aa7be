"""int8 recipes for the fine-tuned student against its fp32 graph (issue 11's parity bar).

Reads what ``FinetuneStudent`` exported for a Rotten Tomatoes model (``fp32.onnx`` and the
held-out token rows with the torch logits, ``val.pkl``, in ``--dir``) and quantises the fp32
graph with each recipe: same-label share on all held-out texts and on those the fp32 model
decides by ≥ 0.2, |Δp|, short texts/s, size. Results: ``benchmarks/results/finetune-int8.md``.
"""
import json, pickle, sys, time, logging
from pathlib import Path
import numpy as np, onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from downsize.students.finetune.runtime import OnnxClassifier, parity, softmax, tokenize
from downsize.students.batching import load_tokenizer
logging.getLogger().setLevel(logging.ERROR)
import argparse
ap = argparse.ArgumentParser(); ap.add_argument("--dir", default="/tmp/ftexp")
d = Path(ap.parse_args().dir)
v = pickle.load(open(d / "val.pkl", "rb"))
rows, z, L = v["rows"], v["z"], v["L"]
p_ref = softmax(z)
m = onnx.load(str(d / "fp32.onnx"))
mm = [n.name for n in m.graph.node if n.op_type in ("MatMul", "Gemm")]
print(len(mm), mm[:8], mm[-6:])
short = [t for t in v["Xt"] if len(t) < 200][:2000]
tok = load_tokenizer()
srows = tokenize(tok, short, L)
def layer_of(name):
    import re
    g = re.search(r"layer\.(\d+)", name)
    return int(g.group(1)) if g else None
head = [n for n in mm if layer_of(n) is None]
print("head/other:", head)
recipes = {
  "now_u8_pc": dict(weight_type=QuantType.QUInt8, per_channel=True),
  "u8_pc_nohead": dict(weight_type=QuantType.QUInt8, per_channel=True, nodes_to_exclude=head),
  "u8_pc_matmul_only_nohead": dict(weight_type=QuantType.QUInt8, per_channel=True, op_types_to_quantize=["MatMul"], nodes_to_exclude=head),
  "s8_pc_rr": dict(weight_type=QuantType.QInt8, per_channel=True, reduce_range=True, nodes_to_exclude=head),
  "u8_pc_nohead_nolast": dict(weight_type=QuantType.QUInt8, per_channel=True, nodes_to_exclude=head + [n for n in mm if layer_of(n) == 5]),
  "u8_pc_ffn_only": dict(weight_type=QuantType.QUInt8, per_channel=True, nodes_to_exclude=head + [n for n in mm if layer_of(n) is not None and "intermediate" not in n and "output/dense" not in n.replace(".", "/") or "attention/output" in n.replace(".", "/")]),
}
res = {}
def bench(path):
    clf = OnnxClassifier(Path(path).read_bytes(), max_length=L, truncation="head_tail", threads=None)
    zz = clf.logits_rows(rows)
    par = parity(p_ref, softmax(zz))
    clf.logits_rows(srows[:200])
    best = 1e9
    for _ in range(2):
        t0 = time.perf_counter(); clf.logits_rows(srows); best = min(best, time.perf_counter() - t0)
    return par, len(srows) / best
par, sp = bench(d / "fp32.onnx")
print("fp32", json.dumps(par), f"{sp:.0f}/s", Path(d/"fp32.onnx").stat().st_size // 2**20, "MB", flush=True)
for name, kw in recipes.items():
    out = d / f"{name}.onnx"
    quantize_dynamic(str(d / "fp32.onnx"), str(out), extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **kw)
    par, sp = bench(out)
    print(name, json.dumps(par), f"{sp:.0f}/s", out.stat().st_size // 2**20, "MB", flush=True)
