"""Several processes (issue 15): DDP and FSDP2 (fully_shard) with two ranks on CPU (gloo) train a fused
tiny timm MlpMixer for three SGD steps; every step's loss and every gradient equal the single-process
eager model's (tests/distributed_worker.py does the comparing, in each rank). On the plain path and on
the Triton kernels under the interpreter. On GPUs: the README's "Several processes" (torchrun)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("timm")
WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = WORKER.parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(mode: str, interpret: bool, world: int = 2) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world),
               CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, str(WORKER), mode], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for r in range(world)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, (_, err)) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"rank {r} ({mode}, interpret={interpret}) failed:\n{err[-3000:]}"
    return [out for out, _ in outs]


@pytest.mark.slow
@pytest.mark.parametrize("interpret", [False, True], ids=["plain", "interpreter"])
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_match_single_process_eager(mode, interpret):
    outs = _run_ranks(mode, interpret)
    for r, out in enumerate(outs):            # every rank ran all its comparisons and passed them
        assert out.strip().startswith(f"ok rank={r} "), (r, out)
