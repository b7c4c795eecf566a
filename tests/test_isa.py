"""Kernel ISA selection: what is offered, set_isa/get_isa, and IM2ROW_ISA at import."""
import os
import subprocess
import sys

import pytest

import im2row
from im2row import hwinfo
from conftest import ISAS, assert_matches_reference, make_operands

pytestmark = pytest.mark.usefixtures("no_tuned_plans")

KNOWN = {"scalar", "avx2", "avx512", "neon"}

no_subprocess = pytest.mark.skipif(bool(os.environ.get("IM2ROW_NO_SUBPROCESS")),
                                   reason="IM2ROW_NO_SUBPROCESS: this run cannot start subprocesses")


def test_available_isas_best_first_scalar_last():
    isas = im2row.available_isas()
    assert isinstance(isas, list) and isas
    assert isas[-1] == "scalar"
    assert len(set(isas)) == len(isas)
    assert set(isas) <= KNOWN
    order = ["avx512", "avx2", "neon", "scalar"]
    assert isas == sorted(isas, key=order.index)


def test_isas_match_cpu_features():
    features = im2row.cpu_features()
    assert set(features) >= {"avx2_fma", "avx512", "neon"}
    assert all(isinstance(v, bool) for v in features.values())
    isas = im2row.available_isas()
    if "avx2" in isas:
        assert features["avx2_fma"]
    if "avx512" in isas:
        assert features["avx512"] and features["avx2_fma"]
    if "neon" in isas:
        assert features["neon"]
    assert not (features["neon"] and (features["avx2_fma"] or features["avx512"]))


def test_set_get_round_trip(isa):
    # the fixture called set_isa(isa)
    assert im2row.get_isa() == isa
    assert hwinfo.kernel_set(isa).isa == isa
    assert im2row.Plan("classic").resolved().isa == isa
    im2row.set_isa(isa.upper())                 # names are case-insensitive
    assert im2row.get_isa() == isa


def test_set_isa_auto_picks_the_best():
    im2row.set_isa("scalar")
    im2row.set_isa("auto")
    assert im2row.get_isa() == im2row.available_isas()[0]


@pytest.mark.parametrize("name", ["sse9", "", "AVX-512", "cuda"] +
                         sorted(KNOWN - set(im2row.available_isas())))
def test_unknown_or_unavailable_isa(name):
    before = im2row.get_isa()
    with pytest.raises(ValueError, match="not available"):
        im2row.set_isa(name)
    assert im2row.get_isa() == before
    with pytest.raises(ValueError, match="not available"):
        hwinfo.kernel_set(name)


def test_new_plans_follow_set_isa(isa, rng):
    x, w, b = make_operands(rng, (1, 3, 9, 8), (5, 3, 3, 3))
    layer = im2row.Conv2d(w, b, padding=1)
    y = layer(x)
    assert layer.plan.isa == isa
    assert_matches_reference(y, x, w, b, padding=1)


def test_packed_gemm_panel_height_is_positive():
    for isa in ISAS:
        assert hwinfo.kernel_set(isa).gemm_mr >= 1


# -- IM2ROW_ISA ----------------------------------------------------------------------------------
_PROBE = (
    "import warnings\n"
    "warnings.simplefilter('always')\n"
    "with warnings.catch_warnings(record=True) as caught:\n"
    "    import im2row\n"
    "    isa = im2row.get_isa()\n"
    "print(isa)\n"
    "print('|'.join(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)))\n"
)


def _run_with_env(value):
    root = os.path.dirname(os.path.dirname(im2row.__file__))
    env = dict(os.environ)
    env.pop("IM2ROW_ISA", None)
    if value is not None:
        env["IM2ROW_ISA"] = value
    env["PYTHONPATH"] = os.pathsep.join(p for p in [root, env.get("PYTHONPATH")] if p)
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          env=env, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    isa, warning = (proc.stdout.splitlines() + ["", ""])[:2]
    return isa, warning


@no_subprocess
@pytest.mark.parametrize("name", ISAS + [ISAS[-1].upper()])
def test_env_forces_isa(name):
    isa, warning = _run_with_env(name)
    assert isa == name.lower()
    assert warning == ""


@no_subprocess
@pytest.mark.parametrize("value", [None, "", "auto"], ids=["unset", "empty", "auto"])
def test_env_default_is_best(value):
    isa, warning = _run_with_env(value)
    assert isa == ISAS[0]
    assert warning == ""


@no_subprocess
def test_env_unknown_isa_warns_and_falls_back():
    isa, warning = _run_with_env("sse9")
    assert isa == ISAS[0]
    assert "sse9" in warning and "not available" in warning


@pytest.mark.parametrize("value", [None, 3, b"scalar"], ids=["none", "int", "bytes"])
def test_set_isa_rejects_non_strings_clearly(value):
    before = im2row.get_isa()
    with pytest.raises((TypeError, ValueError), match="ISA|isa"):
        im2row.set_isa(value)
    assert im2row.get_isa() == before
