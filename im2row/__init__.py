"""im2row: fast, memory-lean 2-D convolution on CPUs.

    y = im2row.conv2d(x, w, b, stride=1, padding=1)      # torch.nn.functional.conv2d semantics
    layer = im2row.Conv2d(w, b, padding=1); y = layer(x)  # prepared once, called many times
"""
from ._version import __version__
from ._api import Conv2d, conv2d, set_conv2d_cache
from ._threads import get_num_threads, set_num_threads
from .hwinfo import available_isas, cpu_features, get_isa, set_isa
from .plan import Plan, default_plan, plan_space
from .spec import ConvSpec, make_spec

__all__ = [
    "__version__", "Conv2d", "conv2d", "set_conv2d_cache", "Plan", "ConvSpec", "make_spec", "default_plan",
    "plan_space", "available_isas", "cpu_features", "get_isa", "set_isa", "get_num_threads",
    "set_num_threads",
]

# -- plan cache and tuner (issue 4) -------------------------------------------------------------
# The cache registers its lookup with the planner now (the file is read on the first lookup);
# the tuner, the only part that imports optuna, loads when tune() is called.
from . import wisdom as _wisdom  # noqa: E402
from .layers import LayerSpec  # noqa: E402
from .wisdom import forget_plans, load_plans, save_plans  # noqa: E402

_wisdom.install()


def tune(model_layers, **options):
    """Tune a model's convolution shapes and store the plans in the plan cache; returns a
    report (print it for a table).  See im2row.tuner.tune for the options (n_trials, timeout,
    threads, cache, storage, progress, input_shape, ...).  Needs optuna: without it,
    ModuleNotFoundError "tuning needs optuna: pip install 'im2row[tune]'"."""
    from .tuner import tune as _tune

    return _tune(model_layers, **options)


__all__ += ["tune", "load_plans", "save_plans", "forget_plans", "LayerSpec"]
