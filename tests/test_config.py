"""One place for each environment variable (mixer_kernels/_config.py): TRITON_INTERPRET read exactly as
Triton reads it, our switches strict about their values, and no other file deciding on them itself."""
import os
import re

import pytest

from mixer_kernels import _config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUES = ["1", "0", "", "true", "True", "TRUE", "false", "yes", "Yes", "no", "on", "ON", "off", "y", "n", "2", "t",
          " 1", "1 ", "01", "interpret"]


@pytest.mark.parametrize("value", VALUES + [None])
def test_triton_interpret_is_tritons_rule(monkeypatch, value):
    from triton._C.libtriton import getenv_bool  # what @triton.jit and Triton's knobs consult
    if value is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", value)
    assert _config.triton_interpret() == getenv_bool("TRITON_INTERPRET", False)


@pytest.mark.parametrize("name, fn, default", [
    ("MIXER_KERNELS_AUTOTUNE", _config.autotune, True),
    ("MIXER_KERNELS_POISON", _config.poison_outputs, False),
    ("MIXER_KERNELS_NVTX", _config.nvtx_enabled, False),
])
def test_switches(monkeypatch, name, fn, default):
    monkeypatch.delenv(name, raising=False)
    assert fn() is default
    for v in ("1", "true", "Yes", "on"):
        monkeypatch.setenv(name, v)
        assert fn() is True
    for v in ("0", "false", "NO", "off", ""):
        monkeypatch.setenv(name, v)
        assert fn() is (default if v == "" else False)
    monkeypatch.setenv(name, "2")
    with pytest.raises(ValueError, match=name):
        fn()


def test_bounds_check_follows_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("MIXER_KERNELS_BOUNDS_CHECK", raising=False)
    assert _config.bounds_check()
    monkeypatch.setenv("MIXER_KERNELS_BOUNDS_CHECK", "0")
    assert not _config.bounds_check()
    monkeypatch.setenv("MIXER_KERNELS_BOUNDS_CHECK", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not _config.bounds_check()


def _sources():
    for top in ("mixer_kernels", "tests", "benchmarks", "examples", "reference", "scripts"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith((".py", ".sh")):
                    path = os.path.join(dirpath, f)
                    with open(path, encoding="utf-8") as fh:
                        yield os.path.relpath(path, ROOT), fh.read()


def test_variables_are_read_in_config_only():
    """No other file reads MIXER_KERNELS_* or TRITON_INTERPRET with its own rule (setting them is fine)."""
    read = re.compile(r"""(?:environ\.get|getenv)\(\s*['"](MIXER_KERNELS_\w+|TRITON_INTERPRET)""")
    offenders = [(path, m.group(1)) for path, text in _sources() if path != os.path.join("mixer_kernels", "_config.py")
                 for m in read.finditer(text)]
    assert not offenders, f"read these through mixer_kernels._config instead: {offenders}"


def test_every_variable_is_in_config_and_the_readme():
    names = {m for _, text in _sources() for m in re.findall(r"MIXER_KERNELS_[A-Z0-9_]+", text)}
    with open(os.path.join(ROOT, "mixer_kernels", "_config.py")) as f:
        config = f.read()
    with open(os.path.join(ROOT, "README.md")) as f:
        table = [line for line in f if line.startswith("| `")]
    assert names, "no MIXER_KERNELS_* name found: the scan is broken"
    assert {n for n in names if n not in config} == set()
    assert {n for n in names | {"TRITON_INTERPRET"} if not any(f"`{n}" in line for line in table)} == set()
