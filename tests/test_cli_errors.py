"""Command-line user errors (issue 13): one line naming the problem on stderr, exit status 2,
no traceback; and an install without optuna, where `tune` says how to get it."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

from im2row.__main__ import main

from conftest import NO_SUBPROCESS, child_env  # noqa: E402


def one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and "error" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "broken.json").write_text("{ not json")
    (tmp_path / "text.onnx").write_text("this is not an ONNX model")
    (tmp_path / "layers.json").write_text('[{"name": "a", "input_shape": [1, 4, 6, 6], '
                                          '"out_channels": 4, "kernel_size": 3}]')
    return tmp_path


@pytest.mark.parametrize("command", ["run", "tune"])
def test_unreadable_models(capsys, files, command, cache):
    if command == "tune":
        pytest.importorskip("optuna")
    one_line_error(capsys, [command, "nosuchmodel"], "nosuchmodel", "resnet50")
    one_line_error(capsys, [command, str(files / "missing.onnx")], "missing.onnx", "no such file")
    one_line_error(capsys, [command, str(files / "broken.json")], "broken.json", "JSON")
    one_line_error(capsys, [command, str(files / "missing.json")], "missing.json", "no such file")
    if importlib.util.find_spec("onnx") is not None:
        one_line_error(capsys, [command, str(files / "text.onnx")], "text.onnx")


@pytest.mark.parametrize("argv,needle", [
    (["run", "LAYERS", "--threads", "0"], "--threads"),
    (["run", "LAYERS", "--threads", "two"], "--threads"),
    (["run", "LAYERS", "--batch", "-1"], "--batch"),
    (["run", "LAYERS", "--repeats", "0"], "--repeats"),
    (["tune", "LAYERS", "--trials", "-1"], "--trials"),
    (["tune", "LAYERS", "--trials", "0"], "--trials"),
    (["tune", "LAYERS", "--timeout", "-5"], "--timeout"),
    (["tune", "LAYERS", "--timeout", "inf"], "--timeout"),
    (["tune", "LAYERS", "--threads", "0"], "--threads"),
    (["tune", "LAYERS", "--input-shape", "1,2,3"], "--input-shape"),
    (["tune"], "model"),
    (["info", "--no-such-option"], "--no-such-option"),
    (["frobnicate"], "frobnicate"),
])
def test_bad_numbers_and_options_stop_before_running(capsys, files, cache, argv, needle):
    if argv[0] == "tune":
        pytest.importorskip("optuna")
    argv = [str(files / "layers.json") if a == "LAYERS" else a for a in argv]
    one_line_error(capsys, argv, needle)
    assert not cache.exists()                       # nothing was tuned or written


HIDE_OPTUNA = textwrap.dedent("""
    import importlib.abc, runpy, sys

    class NoOptuna(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "optuna" or name.startswith("optuna."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoOptuna())
    for name in [m for m in sys.modules if m == "optuna" or m.startswith("optuna.")]:
        del sys.modules[name]
""")


@NO_SUBPROCESS
def test_install_without_optuna(tmp_path):
    run = textwrap.dedent("""
        import im2row
        try:
            im2row.tune("resnet50")
        except ModuleNotFoundError as exc:
            print("tune() says:", exc)
        sys.argv = ["im2row"] + sys.argv[1:]
        runpy.run_module("im2row", run_name="__main__", alter_sys=True)
    """)
    env = child_env(IM2ROW_PLAN_CACHE=str(tmp_path / "plans.json"))

    def child(*argv):
        return subprocess.run([sys.executable, "-c", HIDE_OPTUNA + run, *argv], cwd=str(tmp_path),
                              env=env, capture_output=True, text=True, timeout=300)

    out = child("tune", "resnet50")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == ("python -m im2row tune: tuning needs optuna: "
                                  "pip install 'im2row[tune]'")
    assert "tune() says: tuning needs optuna: pip install 'im2row[tune]'" in out.stdout
    info = child("info")                          # the rest of the CLI works without it
    assert info.returncode == 0 and "kernel ISAs" in info.stdout, info.stderr
    assert not (tmp_path / "plans.json").exists()
