"""im2row.tuner: measure plans per layer shape (Optuna) and store the winners in the plan cache.

    import im2row
    report = im2row.tune("resnet50")            # or a layer list, ONNX model, torch module...
    print(report)

    python -m im2row tune resnet50 --trials 40 --timeout 8

Installed as the package im2row.tuner (pyproject package-dir maps it to the repo's tuner/);
this is the only part of im2row that imports optuna.  Without optuna, importing it raises
ModuleNotFoundError saying how to install it (the CLI prints that line and exits 2).
"""
NEEDS_OPTUNA = "tuning needs optuna: pip install 'im2row[tune]'"


def _require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError as exc:
        if exc.name == "optuna":
            raise ModuleNotFoundError(NEEDS_OPTUNA, name="optuna") from None
        raise ModuleNotFoundError(f"{NEEDS_OPTUNA} (optuna is there but does not import: "
                                  f"{exc})", name=exc.name) from exc


_require_optuna()

from .report import LayerResult, TuneReport, plan_str, shape_str  # noqa: E402
from .search import DEFAULT_TIMEOUT, DEFAULT_TRIALS, RelativePruner, tune, tune_shape  # noqa: E402
from .space import SearchSpace, canonical  # noqa: E402

__all__ = ["tune", "tune_shape", "TuneReport", "LayerResult", "SearchSpace", "canonical",
           "RelativePruner", "plan_str", "shape_str", "DEFAULT_TRIALS", "DEFAULT_TIMEOUT"]
