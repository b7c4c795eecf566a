"""Benchmarks for im2row: side-by-side layer suites against numpy im2col, PyTorch and ONNX Runtime.

    python benchmarks/bench_layers.py --suite resnet50 --threads 1
    from benchmarks.bench_layers import run_suite, load_suite
"""
