"""examples/fuse_timm_mixer.py as a user runs it: arguments parsed before torch is imported, bad options
refused with a message naming them, and the interpreted tiny run on a CPU."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "fuse_timm_mixer.py")


def _run(*args, env=None):
    env = dict(os.environ if env is None else env, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, EXAMPLE, *args], capture_output=True, text=True, env=env, timeout=300)


def test_arguments_parse_without_torch():
    """--help and argument errors answer before torch, timm or mixer_kernels are imported."""
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('ex', {EXAMPLE!r})\n"
            "ex = importlib.util.module_from_spec(spec); spec.loader.exec_module(ex)\n"
            "a = ex.parse_args(['--model', 'mixer_l16_224', '--batch', '8'])\n"
            "assert (a.model, a.batch) == ('mixer_l16_224', 8), a\n"
            "heavy = [m for m in ('torch', 'timm', 'mixer_kernels') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = _run("--help")
    assert r.returncode == 0 and "--interpret" in r.stdout
    assert all(f"--{o}" in r.stdout for o in ("model", "batch", "device", "dtype", "interpret", "reps", "seed"))
    assert r.stdout.count("default") >= 6, r.stdout     # the options say their defaults


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch"),
    (["--reps", "0"], "--reps"),
    (["--interpret", "--model", "mixer_b16_224"], "--model tiny"),
    (["--interpret", "--device", "cuda"], "--device cuda"),
])
def test_bad_options_are_refused(args, message):
    r = _run(*args)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_triton_interpret_in_the_environment_is_refused():
    """A stray TRITON_INTERPRET would interpret a full-size model (hours on a CPU): refused, saying why."""
    r = _run("--model", "mixer_b16_224", env=dict(os.environ, TRITON_INTERPRET="1"))
    assert r.returncode != 0 and "TRITON_INTERPRET" in r.stderr and "--interpret" in r.stderr, r.stderr


def test_tiny_interpreted_run_checks_and_is_seeded():
    """The CPU run through the interpreter: kernels checked against timm's blocks, seeded, no timings."""
    r = _run("--interpret", "--seed", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "seed 3" in r.stdout and "Triton kernels under the interpreter" in r.stdout
    assert "relative difference fused vs unfused" in r.stdout and "no timings on a CPU" in r.stdout
