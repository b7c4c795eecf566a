"""im2row.tuner: measure plans per layer shape (Optuna) and store the winners in the plan cache.

    import im2row
    report = im2row.tune("resnet50")            # or a layer list, ONNX model, torch module...
    print(report)

    python -m im2row tune resnet50 --trials 40 --timeout 8

Installed as the package im2row.tuner (pyproject package-dir maps it to the repo's tuner/);
this is the only part of im2row that imports optuna.
"""
from .report import LayerResult, TuneReport, plan_str, shape_str
from .search import DEFAULT_TIMEOUT, DEFAULT_TRIALS, RelativePruner, tune, tune_shape
from .space import SearchSpace, canonical

__all__ = ["tune", "tune_shape", "TuneReport", "LayerResult", "SearchSpace", "canonical",
           "RelativePruner", "plan_str", "shape_str", "DEFAULT_TRIALS", "DEFAULT_TIMEOUT"]
