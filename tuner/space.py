"""The search space of one shape, derived from im2row.plan.plan_space(spec).

plan_space gives, per Plan field, the values valid for the shape.  The tuner iterates over the
Plan dataclass fields generically, so a field added to Plan and plan_space later is searched
with no change here.  What this module knows beyond plan_space is only which fields a given
algorithm ignores (RELEVANT below): an ignored field is pinned to the Plan default, so plans
that run the same code are not measured twice.  Fields not named there are always searched.

The workspace budget (max_workspace, as for im2row.plan.default_plan: INPUT_BUDGET = one input
image's bytes, an int = bytes, None = no limit) is a property of whole plans, not of a field:
plans() keeps only the plans whose workspace at the space's thread count fits it.

Ordered integer fields (column_block) are searched through their index in the sorted list of
choices (Optuna's TPE then models them as ordinal); everything else is categorical.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

from im2row.plan import (INPUT_BUDGET, Plan, budget_bytes, default_plan, plan_space,
                         scratch_bytes, valid_algorithms, validate_plan)
from im2row.spec import ConvSpec

_PLAN_DEFAULTS = {f.name: f.default for f in fields(Plan)}

# field -> predicate(choices made so far (earlier Plan fields), context) -> does it matter?
# Each predicate may only read fields that come earlier in the Plan dataclass.
RELEVANT = {
    # The improved im2row's buffer width; other algorithms have no column blocks.
    "column_block": lambda p, ctx: p.get("algorithm") == "incremental",
    # Channels per pass: output channels over the improved im2row's columns, input channels
    # of classic's patch matrix, channel blocks of depthwise.
    "channel_block": lambda p, ctx: p.get("algorithm") in ("incremental", "classic", "depthwise"),
    # Output rows per band: the improved im2row's loops, and the bands of the channel-blocked
    # depthwise path (the planar one runs whole planes).
    "row_block": lambda p, ctx: (p.get("algorithm") in ("incremental", "rowwise", "indirect")
                                 or (p.get("algorithm") == "depthwise"
                                     and p.get("channel_block", 0) >= 2)),
    # The depthwise kernel is direct: no GEMM; row-wise im2row runs the packed GEMM only.
    "gemm": lambda p, ctx: p.get("algorithm") not in ("depthwise", "rowwise"),
    # With one thread there is nothing to split; the direct depthwise kernel splits by image.
    # (validate_plan keeps 'blas' to sgemm plans.)
    "parallel": lambda p, ctx: ctx.threads > 1 and p.get("algorithm") != "depthwise",
    # The core's layout: a choice only for algorithms both layouts run for this shape; the
    # others are pinned to the one layout that has them (PINNED: indirect is NHWC only).
    "layout": lambda p, ctx: (p.get("algorithm") in ctx.nchw_algorithms
                              and p.get("algorithm") in ctx.nhwc_algorithms),
    # The packed GEMM's cache blocking (0 = the model's); sgemm and depthwise have none.
    "gemm_kc": lambda p, ctx: p.get("gemm") == "packed",
    "gemm_mc": lambda p, ctx: p.get("gemm") == "packed",
}


# Where an ignored field must still take one value other than the Plan default.
PINNED = {("gemm", "rowwise"): "packed", ("layout", "indirect"): "NHWC"}


def _pinned(name: str, partial: dict):
    return PINNED.get((name, partial.get("algorithm")), _PLAN_DEFAULTS[name])


@dataclass(frozen=True)
class Context:
    threads: int = 1
    nchw_algorithms: tuple = ()     # the shape's algorithms per core layout
    nhwc_algorithms: tuple = ()


def _context(spec: ConvSpec, threads: int) -> Context:
    return Context(threads=int(threads), nchw_algorithms=tuple(valid_algorithms(spec, "NCHW")),
                   nhwc_algorithms=tuple(valid_algorithms(spec, "NHWC")))


def _is_ordinal(choices: list) -> bool:
    return (len(choices) > 2 and all(isinstance(c, numbers.Integral) and not isinstance(c, bool)
                                     for c in choices))


class SearchSpace:
    """The plans worth measuring for one shape at one thread count, within a workspace
    budget."""

    def __init__(self, spec: ConvSpec, threads: int = 1, *, max_workspace=INPUT_BUDGET):
        self.spec = spec
        self.context = _context(spec, threads)
        self.max_workspace = max_workspace
        self.limit = budget_bytes(spec, int(threads), max_workspace)  # bytes or None
        raw = plan_space(spec)
        names = [f.name for f in fields(Plan)]
        self.choices = {}
        for name in names:
            if name in raw:
                values = list(dict.fromkeys(raw[name]))
                if _is_ordinal(values):
                    values = sorted(values)
                self.choices[name] = values
        self.ignored_fields = sorted(set(raw) - set(names))  # in plan_space but not in Plan
        self.default = canonical(default_plan(spec, threads, max_workspace=max_workspace)
                                 .resolved(), spec, threads)
        # The default is measured first, so it must be a point of the space: a value it took
        # from outside plan_space's lists (for a field that matters to it) joins the choices.
        partial = {}
        for name, values in self.choices.items():
            value = getattr(self.default, name)
            if self.relevant(name, partial) and value not in values:
                values.append(value)
                if _is_ordinal(values):
                    values.sort()
            partial[name] = value
        self._plans = None

    # -- canonical plans ------------------------------------------------------------------
    def relevant(self, name: str, partial: dict) -> bool:
        rule = RELEVANT.get(name)
        return True if rule is None else bool(rule(partial, self.context))

    def plans(self) -> list:
        """Every distinct valid plan (canonical form), default first."""
        if self._plans is None:
            found = {}
            names = list(self.choices)

            def walk(i: int, partial: dict):
                if i == len(names):
                    plan = canonical(Plan(**partial), self.spec, self.context.threads, self)
                    if plan in found:
                        return
                    try:
                        validate_plan(self.spec, plan)
                    except ValueError:
                        return
                    if self.fits(plan):
                        found[plan] = None
                    return
                name = names[i]
                if self.relevant(name, partial):
                    for value in self.choices[name]:
                        walk(i + 1, {**partial, name: value})
                else:
                    walk(i + 1, {**partial, name: _pinned(name, partial)})

            walk(0, {})
            ordered = list(found)
            if self.default in found:
                ordered.remove(self.default)
            self._plans = [self.default] + ordered
        return self._plans

    def __len__(self) -> int:
        return len(self.plans())

    def workspace(self, plan: Plan) -> int:
        """Bytes of scratch one image's call of the plan holds at the space's threads."""
        return scratch_bytes(self.spec.with_batch(1), plan, self.context.threads)

    def fits(self, plan: Plan) -> bool:
        return self.limit is None or self.workspace(plan) <= self.limit

    # -- Optuna ---------------------------------------------------------------------------
    def param_name(self, name: str) -> str:
        return f"{name}_index" if _is_ordinal(self.choices[name]) else name

    def suggest(self, trial) -> Plan:
        """Ask an Optuna trial for a plan (define-by-run: conditional fields only when they
        matter)."""
        partial = {}
        for name, values in self.choices.items():
            if not self.relevant(name, partial) :
                partial[name] = _pinned(name, partial)
            elif len(values) == 1:
                partial[name] = values[0]
            elif _is_ordinal(values):
                partial[name] = values[trial.suggest_int(self.param_name(name), 0, len(values) - 1)]
            else:
                partial[name] = trial.suggest_categorical(name, values)
        return Plan(**partial)

    def params_of(self, plan: Plan) -> dict:
        """The Optuna parameters that make suggest() return this plan (for enqueue_trial)."""
        params = {}
        partial = {}
        for name, values in self.choices.items():
            value = getattr(plan, name)
            if not self.relevant(name, partial):
                partial[name] = _pinned(name, partial)
                continue
            partial[name] = value
            if len(values) == 1:
                continue
            if _is_ordinal(values):
                params[self.param_name(name)] = values.index(value)
            else:
                params[name] = value
        return params

    def neighbours(self, plan: Plan, *, radius: int = 1, max_choices: int | None = None) -> list:
        """Valid plans that differ from `plan` in one field: another value of a categorical
        field (with at most max_choices values, if given), or an ordinal field moved by up to
        `radius` positions (radius 0: ordinal fields left alone).  Nearest first."""
        out = []
        valid = set(self.plans())
        for name, values in self.choices.items():
            current = getattr(plan, name)
            if _is_ordinal(values):
                if current not in values:
                    continue
                i = values.index(current)
                options = [values[j] for d in range(1, radius + 1) for j in (i - d, i + d)
                           if 0 <= j < len(values)]
            else:
                if max_choices is not None and len(values) > max_choices:
                    continue
                options = [v for v in values if v != current]
            for value in options:
                candidate = canonical(Plan(**{**plan.to_dict(), name: value}), self.spec,
                                      self.context.threads, self)
                if candidate in valid and candidate != plan and candidate not in out:
                    out.append(candidate)
        return out


def canonical(plan: Plan, spec: ConvSpec, threads: int, space: SearchSpace | None = None) -> Plan:
    """The plan with ignored fields pinned to their defaults and 'auto' ISA resolved; an
    incremental plan that lost its column block gets the default's."""
    plan = plan.resolved()
    ctx = _context(spec, threads)
    values = plan.to_dict()
    partial = {}
    for f in fields(Plan):
        rule = RELEVANT.get(f.name)
        if rule is not None and not rule(partial, ctx):
            partial[f.name] = _pinned(f.name, partial)
        else:
            partial[f.name] = values[f.name]
    if partial.get("parallel") == "shared" and partial.get("algorithm") != "incremental":
        partial["parallel"] = "split"   # only the improved im2row has private buffers to share
    if partial.get("layout") == "NHWC":
        # the channels-last core runs our kernels and splits its bands itself
        partial["gemm"], partial["parallel"] = "packed", "split"
    if partial.get("algorithm") == "incremental" and partial.get("column_block", 1) < 1:
        listed = space.choices if space is not None else plan_space(spec)
        choices = listed.get("column_block") or [1]
        partial["column_block"] = max(choices)
    return Plan(**partial)
