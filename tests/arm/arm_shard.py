"""pytest plugin for the emulated aarch64 run (tests/arm/run.sh loads it with -p arm_shard).

IM2ROW_ARM_SHARD=k/n
    Keep this process's share of the selected tests, so that n emulated pytest processes run
    side by side.  Tests are grouped by (file, function, first parameter) -- for the layer suite
    that is the layer, whose float64 reference is computed once per process and then shared by
    all its variants -- and each function's groups are dealt to the least loaded shard in
    collection order.  Every process computes the same split from the same collection.
IM2ROW_ARM_SLOW_FILTER=REGEX
    Of the tests marked `slow`, keep only those whose node id matches REGEX (re.search); the
    others are deselected.  Unset: keep all that -m/-k selected.
IM2ROW_ARM_HYPOTHESIS_EXAMPLES=N
    Hypothesis profile for emulation: max_examples=N (tests with their own @settings keep
    theirs) and no deadline (emulated code is 5-50x slower, so deadlines would be noise).
"""
import os
import re

import pytest


def _shard():
    spec = os.environ.get("IM2ROW_ARM_SHARD", "")
    if not spec:
        return None
    k, n = (int(v) for v in spec.split("/"))
    if not 0 <= k < n:
        raise ValueError(f"IM2ROW_ARM_SHARD={spec!r}: need 0 <= k < n")
    return k, n


def _group_key(item):
    callspec = getattr(item, "callspec", None)
    first = None
    if callspec is not None and callspec.params:
        name = next(iter(callspec.params))
        first = (name, repr(callspec.params[name]))
    return (str(item.path), getattr(item, "originalname", item.name), first)


def _split(items, n):
    """Shard index per item: groups of a function dealt to the shard with the fewest of that
    function's items (ties: fewest items overall, then lowest index)."""
    groups = {}
    for i, item in enumerate(items):
        groups.setdefault(_group_key(item), []).append(i)
    total = [0] * n
    per_func = {}
    owner = [0] * len(items)
    for key, members in groups.items():  # dicts keep collection order
        load = per_func.setdefault(key[:2], [0] * n)
        s = min(range(n), key=lambda j: (load[j], total[j], j))
        load[s] += len(members)
        total[s] += len(members)
        for i in members:
            owner[i] = s
    return owner


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    keep, drop = list(items), []
    slow_filter = os.environ.get("IM2ROW_ARM_SLOW_FILTER")
    if slow_filter:
        pattern = re.compile(slow_filter)
        keep, drop = [], []
        for item in items:
            if item.get_closest_marker("slow") is None or pattern.search(item.nodeid):
                keep.append(item)
            else:
                drop.append(item)
    shard = _shard()
    if shard is not None and shard[1] > 1:
        k, n = shard
        owner = _split(keep, n)
        drop += [item for item, s in zip(keep, owner) if s != k]
        keep = [item for item, s in zip(keep, owner) if s == k]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    examples = os.environ.get("IM2ROW_ARM_HYPOTHESIS_EXAMPLES")
    if not examples:
        return
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:
        return
    settings.register_profile(
        "im2row-arm", max_examples=int(examples), deadline=None,
        suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("im2row-arm")


def pytest_report_header(config):
    shard = _shard()
    lines = []
    if shard:
        lines.append(f"im2row ARM shard {shard[0]}/{shard[1]}")
    if os.environ.get("IM2ROW_ARM_SLOW_FILTER"):
        lines.append(f"slow tests limited to /{os.environ['IM2ROW_ARM_SLOW_FILTER']}/")
    return lines
