"""pytest plugin used by tests/arm/run.sh: with IM2ROW_ARM_SHARD=k/n, keep every n-th test
(after -m/-k selection) starting at the k-th, so n emulated pytest processes share the suite."""
import os

import pytest


def _shard():
    spec = os.environ.get("IM2ROW_ARM_SHARD", "")
    if not spec:
        return None
    k, n = (int(v) for v in spec.split("/"))
    if not 0 <= k < n:
        raise ValueError(f"IM2ROW_ARM_SHARD={spec!r}: need 0 <= k < n")
    return k, n


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    shard = _shard()
    if shard is None or shard[1] == 1:
        return
    k, n = shard
    keep = [item for i, item in enumerate(items) if i % n == k]
    drop = [item for i, item in enumerate(items) if i % n != k]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_report_header(config):
    shard = _shard()
    return f"im2row ARM shard {shard[0]}/{shard[1]}" if shard else None
