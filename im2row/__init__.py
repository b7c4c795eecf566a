"""im2row: fast, memory-lean 2-D convolution on CPUs.

    y = im2row.conv2d(x, w, b, stride=1, padding=1)      # torch.nn.functional.conv2d semantics
    layer = im2row.Conv2d(w, b, padding=1); y = layer(x)  # prepared once, called many times
"""
from ._version import __version__
from ._api import Conv2d, conv2d
from ._threads import get_num_threads, set_num_threads
from .hwinfo import available_isas, cpu_features, get_isa, set_isa
from .plan import Plan, default_plan, plan_space
from .spec import ConvSpec, make_spec

__all__ = [
    "__version__", "Conv2d", "conv2d", "Plan", "ConvSpec", "make_spec", "default_plan",
    "plan_space", "available_isas", "cpu_features", "get_isa", "set_isa", "get_num_threads",
    "set_num_threads",
]
