"""The workspace budget (max_workspace): default_plan and choose_plan never hand out a plan
whose workspace exceeds it, for a spread of budgets and shapes (huge strides included); a
budget nothing fits is a clear error; a cached plan over the caller's budget is not used.
(The tuner's side is in test_tuner.py.)"""
import numpy as np
import pytest

import im2row
from im2row import Plan, plan as plan_module
from im2row.plan import (INPUT_BUDGET, WorkspaceError, budget_bytes, choose_plan,
                         default_candidates, default_plan, scratch_bytes, workspace_limit)
from conftest import assert_matches_reference, make_operands, reference_pair

pytestmark = pytest.mark.usefixtures("no_tuned_plans")

SHAPES = [  # (input, weight, conv)
    ((1, 16, 20, 20), (32, 16, 3, 3), dict(padding=1)),
    ((1, 8, 9, 31), (8, 8, 1, 5), dict(padding=(0, 2), dilation=(1, 2))),
    ((1, 12, 14, 14), (12, 1, 5, 5), dict(padding=2, groups=12, stride=2)),
    ((1, 12, 14, 14), (24, 1, 3, 3), dict(padding=1, groups=12)),
    ((2, 32, 7, 7), (64, 8, 3, 3), dict(padding=1, groups=4)),
    ((1, 6, 1, 200), (10, 6, 1, 2), dict(dilation=(1, 8))),
    ((1, 24, 10, 10), (16, 24, 1, 1), dict(stride=2)),
    ((1, 3, 33, 33), (8, 3, 7, 7), dict(stride=2, padding=3)),
]


def _spec(shape, weight, conv):
    return im2row.make_spec(shape, weight, **conv)


def _budgets(spec):
    image = spec.with_batch(1).input_bytes
    return [0, 256, 4096, image // 8, image // 2, image, 3 * image, None, INPUT_BUDGET]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape,weight,conv", SHAPES)
def test_default_and_choose_plan_respect_every_budget(shape, weight, conv, threads):
    spec = _spec(shape, weight, conv)
    image = spec.with_batch(1)
    candidates = default_candidates(image, im2row.get_isa(), threads)
    leanest = min(scratch_bytes(image, p, threads) for p in candidates)
    for budget in _budgets(spec):
        limit = budget_bytes(spec, threads, budget)
        if limit is not None and limit < leanest:
            with pytest.raises(WorkspaceError, match="max_workspace"):
                default_plan(spec, threads, max_workspace=budget)
            continue
        for chosen in (default_plan(spec, threads, max_workspace=budget),
                       choose_plan(spec, threads, max_workspace=budget)):
            plan_module.validate_plan(spec, chosen)
            if limit is not None:
                assert scratch_bytes(image, chosen, threads) <= limit, (budget, chosen)
    # The library's own budget never raises: one image's bytes, or the leanest plan.
    assert budget_bytes(spec, threads) == max(image.input_bytes, leanest)


def test_budget_only_grows_the_choice():
    """A larger budget never yields a predicted-slower default than a smaller one."""
    spec = _spec(*SHAPES[0])
    from im2row import costmodel
    previous = None
    for budget in (spec.input_bytes // 4, spec.input_bytes, None):
        chosen = default_plan(spec, 1, max_workspace=budget)
        t = costmodel.predict(spec, chosen, 1)
        if previous is not None:
            assert t <= previous
        previous = t


@pytest.mark.parametrize("value,error", [("1MB", TypeError), (1.5, TypeError),
                                         (True, TypeError), (-1, ValueError)])
def test_bad_budget_named(value, error):
    spec = _spec(*SHAPES[0])
    with pytest.raises(error, match="max_workspace"):
        workspace_limit(spec, value)
    with pytest.raises(error, match="max_workspace"):
        default_plan(spec, 1, max_workspace=value)


def test_numpy_integer_budget():
    spec = _spec(*SHAPES[0])
    assert workspace_limit(spec, np.int64(4096)) == 4096
    assert workspace_limit(spec, INPUT_BUDGET) == spec.input_bytes
    assert workspace_limit(spec, None) is None
    assert repr(INPUT_BUDGET) == "INPUT_BUDGET"


@pytest.mark.parametrize("stride", [2**31, 2**40 - 1, (1, 2**31), (2**31, 1)])
@pytest.mark.parametrize("weight,groups", [((2, 1, 3, 3), 2), ((3, 2, 3, 3), 1)])
def test_huge_strides_stay_within_the_input(stride, weight, groups, rng):
    """Depthwise and row-wise buffers hold sw stride phases: sized by the stride itself they
    asked for 24 GB for stride 2**31 on a 5x5 image.  A stride along an axis with one output
    changes nothing, so the core sees 1 there; every algorithm runs, within the input."""
    x, w, b = make_operands(rng, (1, 2, 5, 5), weight)
    conv = dict(stride=stride, padding=1, groups=groups)
    spec = im2row.make_spec(x.shape, w.shape, **conv)
    expected = reference_pair(x, w, b, **conv)
    # (a 5x5 image is so small that the GEMM's row pointers may outweigh it: then the leanest)
    assert scratch_bytes(spec, default_plan(spec, 1), 1) <= budget_bytes(spec, 1) <= 400
    assert_matches_reference(im2row.conv2d(x, w, b, **conv), x, w, b, expected=expected, **conv)
    for algorithm in plan_module.valid_algorithms(spec):
        gemm = "packed" if algorithm in ("rowwise", "incremental") else "sgemm"
        plan = Plan(algorithm, 1 if algorithm == "incremental" else 0, gemm=gemm)
        assert scratch_bytes(spec, plan, 1) <= 4 * spec.input_bytes, plan
        y = im2row.Conv2d(w, b, **conv, plan=plan)(x)
        assert_matches_reference(y, x, w, b, expected=expected, **conv)


def test_cached_plan_over_the_callers_budget_not_used(monkeypatch):
    spec = _spec((1, 16, 20, 20), (32, 16, 3, 3), dict(padding=1))
    big = Plan("classic", gemm="packed")            # patch matrix: 9x the input
    assert scratch_bytes(spec, big, 1) > spec.input_bytes
    monkeypatch.setattr(plan_module, "_tuned_lookup", lambda s, t: big)
    assert choose_plan(spec, 1) == default_plan(spec, 1)
    assert choose_plan(spec, 1, max_workspace=None) == big
    assert choose_plan(spec, 1, max_workspace=scratch_bytes(spec, big, 1)) == big


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape,weight", [((1, 128, 3, 3), (256, 128, 3, 3)),
                                          ((1, 64, 2, 2), (128, 64, 3, 3)),
                                          ((1, 37, 3, 3), (16, 37, 3, 3))])
def test_tiny_map_lean_plan_takes_the_widest_passes_that_fit(shape, weight, threads, rng):
    """SSD's heads: maps so small that no default candidate fits one input's bytes.  The
    fallback runs classic in the fewest equal input-channel passes within that budget, not
    one channel per pass; and it computes the same as the reference."""
    spec = _spec(shape, weight, dict(stride=2, padding=1))
    if plan_module._lean_plan(spec, im2row.get_isa()).gemm != "packed":
        pytest.skip("scalar host: sgemm plans")
    limit = budget_bytes(spec, threads)
    chosen = default_plan(spec, threads)
    assert chosen.algorithm == "classic" and chosen.channel_block > 1, chosen
    assert scratch_bytes(spec, chosen, threads) <= limit
    cg = spec.group_in_channels
    passes = -(-cg // chosen.channel_block)
    assert chosen.channel_block == -(-cg // passes)          # equal passes
    wider = Plan("classic", 0, -(-cg // (passes - 1)), gemm="packed") if passes > 1 else None
    assert wider is None or scratch_bytes(spec, wider, threads) > limit, wider
    x, w, b = make_operands(rng, shape, weight)
    conv = dict(stride=2, padding=1)
    assert_matches_reference(im2row.Conv2d(w, b, **conv, threads=threads)(x), x, w, b, **conv)
