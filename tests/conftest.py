"""Test harness. Without a CUDA device the Triton kernels run on CPU tensors under the interpreter:
TRITON_INTERPRET must be set before any kernel module is imported, which is why it happens here, at
the top of the first file pytest loads. Every variable is then read through mixer_kernels._config (one
rule for each); importing it here is safe: it imports no kernel module."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MIXER_KERNELS_POISON", "1")  # launchers NaN-fill their outputs (see _config.empty)

import pytest  # noqa: E402

from mixer_kernels._config import bounds_check as bounds_check_on  # noqa: E402
from mixer_kernels._config import triton_interpret  # noqa: E402

if not torch.cuda.is_available() and not triton_interpret():   # _config's rule, Triton's own
    raise pytest.UsageError(f"TRITON_INTERPRET={os.environ['TRITON_INTERPRET']!r} and no CUDA device: the kernel "
                            f"tests would take the plain PyTorch path; unset it (the tests set 1) or set it to 1")

# Files whose every test is slow: test_compile.py compiles every registered kernel for sm_90 and sm_80
# (4-5 minutes on 2 cores). `pytest -m "not slow"` leaves them out.
SLOW_FILES = ("test_compile.py",)

# Files marked `versions`: the tests whose outcome depends on the torch / Triton release, which CI runs again
# under each other pair it tests (torch 2.11 + Triton 3.6, torch 2.15 + Triton 3.9: `pytest -m versions`), while
# the whole suite runs once, on torch 2.14.1 + Triton 3.8. In: every kernel under Triton's interpreter (its
# semantics, and our bounds check patching it, change by release), the compile check and what reads compiled
# code (Triton's compiler, ptxas, nvdisasm), our autotuner subclass (Triton's Autotuner internals), and the
# custom ops under torch.compile, autograd transforms and timm modules (dynamo, custom-op and functorch
# behaviour change by torch release). Out: pure-Python and plain-PyTorch tests (the references, the config
# variables, the examples, JAX checkpoints, the benchmark runner), the speed model (its report is of 3.6 and
# 3.8 only; benchmarks/ is frozen), DDP and XLA (their own stages).
VERSION_FILES = (
    # kernels under the interpreter
    "test_token_mixing.py", "test_token_mixing_large.py", "test_channel_mixing.py", "test_gmixer.py",
    "test_gmlp.py", "test_resmlp.py", "test_layernorm_stats.py", "test_layernorm_backward.py", "test_gelu.py",
    "test_bounds_check.py",
    # compiled code
    "test_compile.py", "test_launch_options.py", "test_sass_reader.py", "test_tuning.py",
    # torch.compile, custom ops, autograd modes, modules
    "test_autograd_modes.py", "test_transforms.py", "test_modules.py", "test_fused_block_contract.py",
)


def _has_torch_xla() -> bool:
    try:
        import torch_xla  # noqa: F401
    except Exception:
        return False
    return True


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: compiled Triton kernels on a CUDA device (skipped elsewhere)")
    config.addinivalue_line("markers", "xla: the XLA path on a torch_xla device (needs torch_xla)")
    config.addinivalue_line("markers", "slow: long interpreter runs")
    config.addinivalue_line("markers", "versions: tests whose outcome depends on the torch / Triton release "
                                       "(conftest.VERSION_FILES; CI runs them under every pair it tests)")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device: compiled kernels are checked by `pytest -m gpu` on a GPU")
    skip_xla = pytest.mark.skip(reason="needs torch_xla (see .ci/run's XLA environment)")
    cuda, xla = torch.cuda.is_available(), _has_torch_xla()
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
        if item.path.name in VERSION_FILES:
            item.add_marker(pytest.mark.versions)
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
        if "xla" in item.keywords and not xla:
            item.add_marker(skip_xla)


@pytest.fixture(scope="session", autouse=True)
def _bounds_check():
    """Under the interpreter every kernel load and store is checked against the launch's tensors
    (tests/bounds_check.py); MIXER_KERNELS_BOUNDS_CHECK=0 turns it off."""
    if not bounds_check_on():
        yield
        return
    import bounds_check
    undo = bounds_check.install()
    yield
    undo()


@pytest.fixture
def device() -> str:
    """Where the kernels run: "cuda" with a GPU, else "cpu" (kernels under the interpreter)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
