import sys, time, random, threading, queue, io, numpy as np, onnxruntime as ort, torch, torchvision, onnx
hm = "/root/.cache/deepgap/onnx/resnet18-64px-1000c-seed0-67dbf41635.onnx"
m = torchvision.models.resnet18().eval(); buf = io.BytesIO()
torch.onnx.export(m, torch.randn(1,3,64,64), buf, input_names=["x"], output_names=["y"], dynamic_axes={"x":{0:"n"}}, dynamo=False)
mods = {"harness": open(hm,"rb").read(), "tv": buf.getvalue()}
g = onnx.load_from_string(mods["harness"]); print("harness opset", g.opset_import, "nodes", len(g.graph.node), [n.op_type for n in g.graph.node][:6], "inputs", g.graph.input[0].type)
g2 = onnx.load_from_string(mods["tv"]); print("tv nodes", len(g2.graph.node))
def test(name):
    so = ort.SessionOptions(); so.intra_op_num_threads = THREADS; so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(mods[name], so, providers=["CPUExecutionProvider"]); iname = s.get_inputs()[0].name
    xn = np.random.default_rng(0).standard_normal((1,3,64,64)).astype(np.float32)
    for _ in range(20): s.run(None, {iname: xn})
    q = queue.Queue(); comp = []
    def w2():
        while q.get() is not None:
            t = time.perf_counter(); s.run(None, {iname: xn}); comp.append((time.perf_counter()-t)*1e3)
    w = threading.Thread(target=w2); w.start(); rng = random.Random(0)
    for i in range(300): time.sleep(rng.expovariate(20)); q.put(1)
    q.put(None); w.join(); c = np.array(comp)
    print(f"threads={THREADS} comp p50 {np.percentile(c,50):.2f} p90 {np.percentile(c,90):.2f} p99 {np.percentile(c,99):.2f} max {c.max():.2f}", flush=True)
for THREADS in (0, 2, 0, 2): test("harness")
