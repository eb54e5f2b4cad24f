from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

setup(
    name="deepgap",
    version="0.1.0",
    description="MLPerf LoadGen inference benchmarks for ResNet18/50/101 on NVIDIA GPUs and CPUs",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(
        include=["deepgap", "deepgap.*", "plumbing", "plumbing.*", "harness", "harness.*", "runs", "runs.*", "studies",
                 "studies.*", "reports", "reports.*", "sut", "sut.*", "scenarios", "scenarios.*", "calibration", "calibration.*",
                 "audit", "audit.*", "serving", "serving.*"]
    ),
    package_data={"scenarios": ["*.yaml", "profiles/*.yaml"], "reports": ["templates/*.j2"]},
    install_requires=[
        "mlcommons-loadgen>=6.0",
        "torch>=2.11",
        "torchvision>=0.26",
        "numpy>=1.26",
        "pyyaml>=6.0",
        "pillow>=10.0",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "nvidia-ml-py>=12.535",
        "scikit-learn>=1.3",  # its bundled handwritten digits train the accuracy gate's network
        "matplotlib>=3.8",  # PNG plots of the comparison report (Agg canvas, no display)
        "jinja2>=3.0",  # the comparison report's and the capacity plan's HTML and Markdown templates
        "tqdm>=4.60",  # the progress bar of a timed run
    ],
    extras_require={
        "gpu": ["nvidia-ml-py>=12.535"],
        "onnx-gpu": ["onnxruntime-gpu>=1.17"],
        # TensorRT's wheels are built per CUDA major, and the one installed must match the CUDA
        # major of the torch build and be no newer than the driver (sut/trt_cuda.py checks):
        # deepgap[tensorrt-cu12] for a CUDA 12 torch or a driver older than R580,
        # deepgap[tensorrt-cu13] for a CUDA 13 torch on R580 or newer (CUDA 13 wheels from 10.13.2).
        # Plain "tensorrt" is NVIDIA's metapackage of its default CUDA build: CUDA 13 for TensorRT 11.
        "tensorrt-cu12": ["tensorrt-cu12>=10.0"],
        "tensorrt-cu13": ["tensorrt-cu13>=10.13.2"],
        "tensorrt": ["tensorrt>=10.0"],
        # --backend kserve: a remote KServe v2 server (Triton, KServe, MLServer) over gRPC or HTTP.
        # prometheus-client parses a server's metrics for --metrics-url (runs/remote_power.py).
        "kserve": ["tritonclient[grpc,http]>=2.50", "prometheus-client>=0.17"],
        # The KServe tests serve the network from a real MLServer (serving/mlserver_launch.py).
        # mlserver and tritonclient[grpc] both cap protobuf below 7 and tritonclient caps
        # ml_dtypes at 0.5.4, which onnx 1.23 (protobuf>=6.31.1, ml_dtypes>=0.5.4) still takes.
        "test": ["pytest>=8.0", "pytest-timeout>=2.2", "mlserver==1.7.1", "tritonclient[grpc,http]>=2.50",
                 "prometheus-client>=0.17"],
    },
    entry_points={"console_scripts": ["deepgap=deepgap.cli:main", "deepgap-sweep=harness.sweep:main"]},
)
