"""deepgap: MLPerf LoadGen inference benchmarks for ResNets on GPUs and CPUs."""

__version__ = "0.1.0"
