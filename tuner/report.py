"""What tune() returns: per distinct shape, the default plan's time, the tuned time, the speedup
and the chosen plan; printing a TuneReport gives a table.  Times are seconds per call, the
median of the final head-to-head re-timing (default and finalists in interleaved rounds)."""
from __future__ import annotations

from dataclasses import dataclass, field

from im2row.plan import Plan
from im2row.spec import ConvSpec

_ALGO = {"incremental": "incr", "classic": "classic", "pointwise": "1x1", "depthwise": "dw"}


def plan_str(plan: Plan | None) -> str:
    """Compact plan text: 'incr b12 sgemm avx512' (+ any non-default extra field)."""
    if plan is None:
        return "-"
    data = plan.to_dict()
    parts = [_ALGO.get(data.pop("algorithm"), plan.algorithm)]
    block = data.pop("column_block", 0)
    if block:
        parts.append(f"b{block}")
    if plan.algorithm != "depthwise":
        parts.append(data.pop("gemm", ""))
    else:
        data.pop("gemm", None)
    parts.append(data.pop("isa", ""))
    defaults = Plan().to_dict()
    for key, value in data.items():
        if value != defaults.get(key):
            parts.append(str(value))
    return " ".join(p for p in parts if p)


def shape_str(spec: ConvSpec) -> str:
    """'64x56x56>64 k3 s1 p1' (batch, dilation, groups, asymmetric padding when not trivial)."""
    def pair(a, b):
        return str(a) if a == b else f"{a}x{b}"
    text = f"{spec.in_channels}x{spec.height}x{spec.width}>{spec.out_channels}"
    text += f" k{pair(spec.kernel_h, spec.kernel_w)} s{pair(spec.stride_h, spec.stride_w)}"
    pads = (spec.pad_top, spec.pad_left, spec.pad_bottom, spec.pad_right)
    if pads[:2] == pads[2:]:
        text += f" p{pair(pads[0], pads[1])}"
    else:
        text += " p" + ",".join(map(str, pads))
    if (spec.dilation_h, spec.dilation_w) != (1, 1):
        text += f" d{pair(spec.dilation_h, spec.dilation_w)}"
    if spec.groups != 1:
        text += f" g{spec.groups}"
    if spec.batch != 1:
        text = f"{spec.batch}x" + text
    if spec.layout != "NCHW":
        text += f" {spec.layout}"
    return text


@dataclass
class LayerResult:
    """One distinct shape's outcome."""

    name: str
    names: list
    count: int
    spec: ConvSpec
    status: str                     # 'tuned' | 'default' (default kept) | 'cached' | 'failed'
    plan: Plan | None = None
    time: float | None = None
    default_plan: Plan | None = None
    default_time: float | None = None
    trials: int = 0
    space_size: int = 0
    seconds: float = 0.0
    error: str | None = None
    rejected: list = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        if not self.time or not self.default_time:
            return None
        return self.default_time / self.time

    @classmethod
    def from_outcome(cls, shape, outcome, status: str, seconds: float) -> "LayerResult":
        return cls(name=shape.name, names=list(shape.names), count=shape.count, spec=shape.spec,
                   status=status, plan=outcome.plan, time=outcome.time,
                   default_plan=outcome.default_plan, default_time=outcome.default_time,
                   trials=outcome.trials, space_size=outcome.space_size, seconds=seconds,
                   rejected=[(p.to_dict(), why) for p, why in outcome.rejected])

    @classmethod
    def from_entry(cls, shape, entry: dict) -> "LayerResult":
        default = entry.get("default_plan")
        return cls(name=shape.name, names=list(shape.names), count=shape.count, spec=shape.spec,
                   status="cached", plan=Plan.from_dict(entry["plan"]),
                   time=entry.get("time_s"),
                   default_plan=Plan.from_dict(default) if default else None,
                   default_time=entry.get("default_time_s"), trials=entry.get("trials", 0),
                   space_size=entry.get("space", 0))

    @classmethod
    def failed(cls, shape, error: str, seconds: float) -> "LayerResult":
        return cls(name=shape.name, names=list(shape.names), count=shape.count, spec=shape.spec,
                   status="failed", error=error, seconds=seconds)

    def to_dict(self) -> dict:
        return {"name": self.name, "names": self.names, "count": self.count,
                "spec": self.spec.to_dict(), "status": self.status,
                "plan": self.plan.to_dict() if self.plan else None, "time_s": self.time,
                "default_plan": self.default_plan.to_dict() if self.default_plan else None,
                "default_time_s": self.default_time, "speedup": self.speedup,
                "trials": self.trials, "space": self.space_size, "tuning_s": self.seconds,
                "error": self.error, "rejected": self.rejected}


def _ms(value) -> str:
    return "-" if value is None else f"{value * 1e3:.3f}"


@dataclass
class TuneReport:
    layers: list
    threads: int = 1
    cache: str | None = None
    settings: dict = field(default_factory=dict)
    cache_error: str | None = None  # why the plans could not be written to `cache`

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def plans(self) -> dict:
        """{ConvSpec: chosen Plan} for every shape that has one."""
        return {r.spec: r.plan for r in self.layers if r.plan is not None}

    def totals(self) -> tuple:
        """(default seconds, tuned seconds) for one pass of the model (times x count), over the
        shapes with both timings."""
        d = t = 0.0
        for r in self.layers:
            if r.time and r.default_time:
                d += r.default_time * r.count
                t += r.time * r.count
        return d, t

    def to_dict(self) -> dict:
        d, t = self.totals()
        return {"threads": self.threads, "cache": self.cache, "cache_error": self.cache_error,
                "settings": self.settings,
                "layers": [r.to_dict() for r in self.layers],
                "total_default_s": d, "total_tuned_s": t}

    def table(self) -> str:
        headers = ["layer", "shape", "n", "default plan", "default ms", "tuned plan", "tuned ms",
                   "speedup", "trials", "status"]
        rows = []
        for r in self.layers:
            rows.append([r.name, shape_str(r.spec), str(r.count), plan_str(r.default_plan),
                         _ms(r.default_time), plan_str(r.plan), _ms(r.time),
                         "-" if r.speedup is None else f"{r.speedup:.2f}x",
                         f"{r.trials}/{r.space_size}" if r.space_size else str(r.trials or "-"),
                         r.status if not r.error else f"failed: {r.error[:60]}"])
        d, t = self.totals()
        rows.append(["total (x n)", "", str(sum(r.count for r in self.layers)), "", _ms(d or None),
                     "", _ms(t or None), f"{d / t:.2f}x" if t else "-", "", ""])
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        right = {2, 4, 6, 7, 8}

        def line(cells):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        out = [line(headers), line(["-" * w for w in widths])]
        out += [line(row) for row in rows[:-1]]
        out += [line(["-" * w for w in widths]), line(rows[-1])]
        head = (f"im2row tuning: {len(self.layers)} distinct shape(s), {self.threads} thread(s); "
                f"ms = median of the final interleaved re-timing"
                + (f" ({self.settings['clock']} clock)" if self.settings.get("clock") else ""))
        if self.cache and self.cache_error:
            head += f"\nplans NOT saved to {self.cache}: {self.cache_error} (kept in memory)"
        elif self.cache:
            head += f", plans in {self.cache}"
        return head + "\n" + "\n".join(out)

    def __str__(self) -> str:
        return self.table()
