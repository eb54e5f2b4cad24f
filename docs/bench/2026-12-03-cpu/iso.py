import time, sys, numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 2
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
x = np.random.rand(1, 3, 64, 64).astype(np.float32)
for _ in range(50): s.run(None, {name: x})
rng = np.random.default_rng(0); lat = []
n = int(sys.argv[2]); qps = float(sys.argv[3])
t_next = time.perf_counter()
for i in range(n):
    t_next += rng.exponential(1 / qps) if qps > 0 else 0
    while time.perf_counter() < t_next: time.sleep(max(0, t_next - time.perf_counter()))
    t0 = time.perf_counter(); s.run(None, {name: x}); lat.append(time.perf_counter() - t0)
lat = np.array(lat) * 1e3
print(f"qps={qps} n={n} p50={np.percentile(lat,50):.2f} p90={np.percentile(lat,90):.2f} p99={np.percentile(lat,99):.2f} max={lat.max():.1f} over15={int((lat>15).sum())}")
