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


def _source_checkout_tuner():
    """In a source checkout run in place, im2row.tuner lives in ../tuner (installs map it with
    package-dir); make `import im2row.tuner` find it there too."""
    import importlib.abc
    import importlib.util
    import os
    import sys

    init = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "tuner", "__init__.py")
    if not os.path.isfile(init) or os.path.isdir(os.path.join(os.path.dirname(__file__), "tuner")):
        return

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname != __name__ + ".tuner":
                return None
            return importlib.util.spec_from_file_location(
                fullname, init, submodule_search_locations=[os.path.dirname(init)])

    if not any(type(f).__name__ == "_Finder" and getattr(f, "_im2row", False)
               for f in sys.meta_path):
        finder = _Finder()
        finder._im2row = True
        sys.meta_path.append(finder)


_source_checkout_tuner()


def tune(model_layers, **options):
    """Tune a model's convolution shapes and store the plans in the plan cache; returns a
    report (print it for a table).  See im2row.tuner.tune for the options (n_trials, timeout,
    threads, cache, storage, progress, input_shape, ...).  Needs optuna (pip install
    im2row[tune])."""
    from .tuner import tune as _tune

    return _tune(model_layers, **options)


__all__ += ["tune", "load_plans", "save_plans", "forget_plans", "LayerSpec"]
