"""Experiment (issue 3, 2026-11-26): does ONNX Runtime run INT8 convolutions once Conv outputs
are quantized too? Throwaway: resnet18 at 224 px, seeded weights, Conv-output scales from the
max over 16 synthetic images. Needs the cached fp32 and int8 graphs of a prior int8 run.
"""
import glob, time, numpy as np, onnx, onnxruntime as ort
from onnx import helper, numpy_helper
from sut.data import SyntheticDataset
base = "/root/.cache/deepgap/onnx/resnet18-224px-1000c-seed0-67dbf41635"
fp32, int8 = base + ".onnx", glob.glob(base + "-int8-f0834*.onnx")[0]
x = SyntheticDataset(image_size=224).load(np.arange(16)).astype(np.float32)
q = onnx.load(int8)
convs = [n for n in q.graph.node if n.op_type == "Conv"]
outs = [n.output[0] for n in convs]
# amax of every Conv output on 16 images (fp32 graph, extra outputs)
m = onnx.load(fp32)
for name in outs: m.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
vals = s.run(outs, {s.get_inputs()[0].name: x})
amax = {n: float(np.abs(v).max()) for n, v in zip(outs, vals)}
# insert Q/DQ after each Conv output
nodes = []
for n in q.graph.node:
    nodes.append(n)
    if n.op_type == "Conv":
        t = n.output[0]; new = t + "_conv_q"
        n.output[0] = t + "_raw"
        sc, zp = t + "_oscale", t + "_ozp"
        q.graph.initializer.extend([numpy_helper.from_array(np.array(amax[t] / 127, np.float32), sc),
                                    numpy_helper.from_array(np.array(0, np.int8), zp)])
        nodes.append(helper.make_node("QuantizeLinear", [t + "_raw", sc, zp], [new]))
        nodes.append(helper.make_node("DequantizeLinear", [new, sc, zp], [t]))
del q.graph.node[:]; q.graph.node.extend(nodes)
onnx.save(q, "/tmp/int8_out.onnx")
def bench(path):
    so = ort.SessionOptions(); so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = path + ".opt"
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]); name = s.get_inputs()[0].name
    out = s.run(None, {name: x})[0]
    for _ in range(2): s.run(None, {name: x})
    t = time.perf_counter(); n = 8
    for _ in range(n): s.run(None, {name: x})
    import collections; ops = collections.Counter(k.op_type for k in onnx.load(path + ".opt").graph.node)
    return 16 * n / (time.perf_counter() - t), out, dict(ops)
ref = None
for label, path in (("fp32", fp32), ("int8 inputs-only", int8), ("int8 + conv outputs", "/tmp/int8_out.onnx")):
    rate, out, ops = bench(path)
    if ref is None: ref = out
    agree = float(np.mean(out.argmax(1) == ref.argmax(1)))
    print(f"{label}: {rate:.1f} img/s, top-1 agreement with fp32 {agree:.2f}, QLinearConv {ops.get('QLinearConv', 0)}, Conv {ops.get('Conv', 0) + ops.get('FusedConv', 0)}")
