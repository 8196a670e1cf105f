"""Read the speed hazards of a compiled kernel from ptxas's report and the SASS, no GPU needed.

What is read (docs/design.md, "Reading speed from compiled code"):
- ptxas `-v` notes C7515 (wgmma serialised: the async tensor-core pipeline runs one wgmma at a time),
  C7517 / C7519 (warpgroup.wait / warpgroup.arrive injected by ptxas: repairs of the same kind);
- tensor-core instructions: wgmma (per warpgroup) by shape, with operand A from registers
  (`HGMMA ... R, Rn, gdesc[..]`) or shared memory (`HGMMA ... R, gdesc[..], ..`), in the forms nvdisasm
  prints for sm_90a (the first suffix after the shape is the accumulator's type, then the operands'):
  `HGMMA.64x128x16.F32` (fp16; `.F16` with an fp16 accumulator), `HGMMA.64x128x16.F32.BF16`,
  `HGMMA.64x128x8.F32.TF32`, `QGMMA.64x128x32.F32.E4M3.E4M3` (fp8, E5M2 alike), `IGMMA.64x128x32.S8.S8`
  (int8, no accumulator type), each also sparse (`HGMMA.SP.64x8x32.F32`: K is the dense K, which 2:4
  sparsity does in the time of K / 2); `HMMA[.SP].16816.F32[.BF16|.TF32]` and `IMMA.16832.S8.S8`
  (mma.sync, per warp: the Ampere path, slower on Hopper);
- global loads: `UTMALDG` (TMA), `LDGSTS` (cp.async), plain `LDG` (not `LDGDEPBAR`, a cp.async commit);
- loops: a branch to an earlier address is a loop's back edge, unless the branch lies after the last
  unpredicated EXIT: ptxas puts cold blocks there (the retry of a TMA mbarrier wait, SYNCS.PHASECHK),
  reached from inside a loop and jumping back into it, not loops of their own; the main loop is the innermost loop
  that holds tensor-core instructions (for a kernel without dots, the largest outermost loop). Its
  static instruction count is the SASS instructions one warp issues per iteration; what follows it
  up to the kernel's end is the epilogue.

Counts are static (every instruction of a loop body once per iteration, both sides of a branch): an
upper bound for the issue work of code with untaken branches, so a model built on them errs slow.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRA = re.compile(r"\bBRA\b.*?`\((\.L_x_\d+)\)")
# wgmma: H (fp16, bf16, tf32), Q (fp8), I (int8) GMMA, optionally sparse; then the shape and the types
_GMMA = re.compile(r"\b([HQI])GMMA(\.SP)?\.(\d+)x(\d+)x(\d+)((?:\.[A-Z]\w*)*)")
_MMA = re.compile(r"\b([HI])MMA(\.SP)?\.(\d+)((?:\.[A-Z]\w*)*)")
_PRED = re.compile(r"^@!?U?P[T\d]+\s+")

# Dense tensor-core FLOP per SM cycle by operand type (H100/H200: 4096 for bf16/fp16, half for tf32,
# twice for fp8 and int8), the rate both wgmma and the model use.
TC_FLOP_PER_CYCLE = {"BF16": 4096, "F16": 4096, "TF32": 2048, "E4M3": 8192, "E5M2": 8192, "S8": 8192, "U8": 8192}


def _operand_type(kind: str, suffixes: str) -> str:
    """The operand type of a tensor-core opcode of `kind` H, Q or I from its type suffixes (".F32.BF16"):
    after the accumulator's for H and Q, the first for I (no accumulator type); none after an H
    accumulator means fp16."""
    types = suffixes.split(".")[1:]
    operands = types if kind == "I" else types[1:]
    return operands[0] if operands else "F16"


def _bf16_rate(flop: float, ty: str) -> float:
    """`flop` of operand type `ty` in bf16-rate FLOP: the FLOP bf16 does in the same tensor-core time."""
    return flop * TC_FLOP_PER_CYCLE["BF16"] / TC_FLOP_PER_CYCLE.get(ty, TC_FLOP_PER_CYCLE["BF16"])


PTXAS_NOTES = ("C7515", "C7517", "C7519")


def _width(opcode: str) -> int:
    """Bytes one warp moves with a load or store opcode: its width suffix (.128, .64, .U16, .U8; none: 32
    bits) times 32 lanes."""
    parts = opcode.split(".")
    for p, b in (("128", 16), ("64", 8), ("U16", 2), ("S16", 2), ("U8", 1), ("S8", 1)):
        if p in parts:
            return 32 * b
    return 32 * 4


def ptxas_notes(text: str) -> dict[str, int]:
    """How often ptxas printed each of the serialisation notes (C7515, C7517, C7519)."""
    return {code: len(re.findall(rf"\({code}\)", text)) for code in PTXAS_NOTES}


@dataclass
class Instr:
    addr: int
    text: str

    @property
    def opcode(self) -> str:
        return _PRED.sub("", self.text).split(" ", 1)[0]


@dataclass
class Loop:
    start: int       # address of the first instruction (the back edge's target)
    end: int         # address of the back-edge branch
    def contains(self, other: Loop) -> bool:
        return self.start <= other.start and other.end <= self.end and (self.start, self.end) != (other.start,
                                                                                                   other.end)


@dataclass
class Region:
    """Counts over a range of instructions."""
    instructions: int = 0
    hgmma: dict[str, int] = field(default_factory=dict)     # wgmma shape "64x128x16" -> count (per warpgroup),
    #                                                         sparse as "SP.64x8x32"
    hmma: int = 0                # mma.sync (HMMA, IMMA), per warp
    wgmma_flop: float = 0.0      # 2*M*N*K per warpgroup in bf16-rate FLOP (fp16 as bf16, tf32 double, fp8 and
    #                              int8 half, sparse half again)
    hmma_flop: float = 0.0       # FLOP per warp, bf16-rate units
    a_from_registers: int = 0    # wgmma with operand A in registers
    drains: int = 0              # WARPGROUP.DEPBAR.LE gsb0, 0x0: wait until no wgmma is in flight
    # memory traffic per warp (bytes; the width of each load or store times 32 lanes) and waits
    ldg_bytes: int = 0           # LDG: global -> registers
    ldgsts_bytes: int = 0        # LDGSTS (cp.async): global -> shared memory
    sts_bytes: int = 0           # STS: registers -> shared memory
    lds_bytes: int = 0           # LDS / LDSM: shared memory -> registers
    stg_bytes: int = 0           # STG: registers -> global memory
    tma: int = 0                 # UTMALDG copies (their bytes are the ring stage's, not in the SASS)
    exposed_waits: int = 0       # DEPBAR.LE SB0, 0x0: wait for every cp.async group in flight
    mufu: int = 0                # MUFU (ex2, rcp, rsq, lg2, sin, cos, tanh): 16 results per SM per clock

    @property
    def sync_copy(self) -> int:
        """1 when the region loads global memory into registers and stores them to shared memory (LDG feeding
        STS): a synchronous copy whose load latency the region waits for."""
        return int(self.ldg_bytes > 0 and self.sts_bytes > 0)

    def _memory(self, op: str, text: str):
        width = _width(op)
        if op.startswith("LDGSTS"):
            self.ldgsts_bytes += width
        elif op.startswith("LDGDEPBAR"):
            return
        elif op.startswith("LDG"):
            self.ldg_bytes += width
        elif op.startswith("STS"):
            self.sts_bytes += width
        elif op.startswith("STG"):
            self.stg_bytes += width
        elif op.startswith("LDSM"):
            self.lds_bytes += 128 * (4 if ".4" in op else 2 if ".2" in op else 1)   # 8x8 16-bit matrices
        elif op.startswith("LDS"):
            self.lds_bytes += width
        elif op.startswith("UTMALDG"):
            self.tma += 1
        elif op.startswith("DEPBAR") and re.search(r"SB0,\s*0x0\b", text):
            self.exposed_waits += 1
        elif op.startswith("MUFU"):
            self.mufu += 1

    def add(self, ins: Instr):
        self.instructions += 1
        self._memory(ins.opcode, ins.text)
        if ins.opcode.startswith("WARPGROUP.DEPBAR") and re.search(r"gsb0,\s*0x0\b", ins.text):
            self.drains += 1
        m = _GMMA.search(ins.text)
        if m:
            kind, sparse, suffixes = m.group(1), m.group(2), m.group(6)
            M, N, K = int(m.group(3)), int(m.group(4)), int(m.group(5))
            key = f"SP.{M}x{N}x{K}" if sparse else f"{M}x{N}x{K}"
            self.hgmma[key] = self.hgmma.get(key, 0) + 1
            self.wgmma_flop += _bf16_rate(2.0 * M * N * K / (2 if sparse else 1), _operand_type(kind, suffixes))
            operands = _PRED.sub("", ins.text).split(None, 1)
            parts = [p.strip() for p in operands[1].split(",")] if len(operands) > 1 else []
            if len(parts) > 1 and parts[1].startswith("R"):
                self.a_from_registers += 1
            return
        m = _MMA.search(ins.text)
        if m:
            kind, sparse, shape, suffixes = m.group(1), m.group(2), m.group(3), m.group(4)
            # "16816" = m16 n8 k16; "16832" = m16 n8 k32; "1688" = m16 n8 k8; "884" = m8 n8 k4
            M, N, K = (16, 8, int(shape[3:])) if shape.startswith("168") else (8, 8, int(shape[2:]))
            self.hmma += 1
            self.hmma_flop += _bf16_rate(2.0 * M * N * K / (2 if sparse else 1), _operand_type(kind, suffixes))

    @property
    def hgmma_count(self) -> int:
        return sum(self.hgmma.values())


@dataclass
class SassReport:
    total: Region
    main: Region | None          # the main loop's body (per iteration)
    outer: Region | None         # the loop enclosing the main loop, less the main loop (per outer iteration)
    epilogue: Region             # after the main loop (or after the enclosing loop), to the end
    rest: Region                 # everything outside the main and enclosing loops, epilogue included
    loops: int
    dot_loops: int               # loops holding tensor-core instructions with no such loop inside
    loads: dict[str, int]        # tma / cp.async / plain global loads (instruction counts)

    def as_dict(self) -> dict:
        def reg(r):
            return None if r is None else dict(instructions=r.instructions, hgmma=dict(r.hgmma), hmma=r.hmma,
                                               a_from_registers=r.a_from_registers, drains=r.drains,
                                               wgmma_flop=r.wgmma_flop, hmma_flop=r.hmma_flop,
                                               ldg_bytes=r.ldg_bytes, ldgsts_bytes=r.ldgsts_bytes,
                                               sts_bytes=r.sts_bytes, lds_bytes=r.lds_bytes, tma=r.tma,
                                               stg_bytes=r.stg_bytes,
                                               exposed_waits=r.exposed_waits, sync_copy=r.sync_copy,
                                               mufu=r.mufu)
        return dict(total=reg(self.total), main=reg(self.main), outer=reg(self.outer), epilogue=reg(self.epilogue),
                    rest=reg(self.rest),
                    loops=self.loops, dot_loops=self.dot_loops, loads=dict(self.loads))


def parse(sass: str) -> list[Instr]:
    """The instructions of `nvdisasm -c` output, in address order."""
    out = []
    for line in sass.splitlines():
        m = _INSTR.search(line)
        if m:
            out.append(Instr(int(m.group(1), 16), m.group(2).strip()))
    return out


def _labels(sass: str) -> dict[str, int]:
    labels, pending = {}, []
    for line in sass.splitlines():
        lm = _LABEL.match(line)
        if lm:
            pending.append(lm.group(1))
            continue
        m = _INSTR.search(line)
        if m and pending:
            for name in pending:
                labels[name] = int(m.group(1), 16)
            pending = []
    return labels


def _region(instrs, lo, hi, exclude: Loop | None = None) -> Region:
    r = Region()
    for ins in instrs:
        if lo <= ins.addr <= hi and not (exclude and exclude.start <= ins.addr <= exclude.end):
            r.add(ins)
    return r


def analyse(sass: str) -> SassReport:
    """The report of one kernel's SASS (`nvdisasm -c` text of a cubin holding one kernel)."""
    instrs = parse(sass)
    labels = _labels(sass)
    exits = [ins.addr for ins in instrs if ins.text.split(" ", 1)[0] == "EXIT"]
    cold = max(exits) if exits else 1 << 62      # after the last unpredicated EXIT: cold blocks
    loops: dict[int, Loop] = {}
    for ins in instrs:
        if ins.addr > cold:
            break
        m = _BRA.search(ins.text)
        if m and m.group(1) in labels:
            target = labels[m.group(1)]
            if target < ins.addr:
                lp = loops.get(target)
                loops[target] = Loop(target, max(ins.addr, lp.end if lp else 0))
    loop_list = sorted(loops.values(), key=lambda lp: (lp.start, -lp.end))
    total = _region(instrs, 0, 1 << 62)
    regions = {(lp.start, lp.end): _region(instrs, lp.start, lp.end) for lp in loop_list}

    def tensor(lp):
        r = regions[(lp.start, lp.end)]
        return r.hgmma_count + r.hmma
    dot_loops = [lp for lp in loop_list if tensor(lp)]
    innermost = [lp for lp in dot_loops if not any(lp.contains(o) for o in dot_loops)]
    main = None
    if innermost:   # siblings: the one doing the most tensor work, then the longest body (errs slow)
        main = max(innermost, key=lambda lp: (regions[(lp.start, lp.end)].wgmma_flop
                                              + regions[(lp.start, lp.end)].hmma_flop,
                                              regions[(lp.start, lp.end)].instructions))
    elif loop_list:
        outermost = [lp for lp in loop_list if not any(o.contains(lp) for o in loop_list)]
        main = max(outermost, key=lambda lp: regions[(lp.start, lp.end)].instructions)
    main_r = outer_r = None
    enclosing = None
    if main is not None:
        main_r = regions[(main.start, main.end)]
        around = [lp for lp in loop_list if lp.contains(main)]
        if around:
            enclosing = min(around, key=lambda lp: lp.end - lp.start)
            outer_r = _region(instrs, enclosing.start, enclosing.end, exclude=main)
    last = enclosing or main
    epilogue = _region(instrs, last.end + 1, 1 << 62) if last else Region()
    rest = Region()
    for ins in instrs:
        if last is None or not (last.start <= ins.addr <= last.end):
            rest.add(ins)
    loads = dict(tma=0, cp_async=0, plain=0)
    for ins in instrs:
        op = ins.opcode
        if op.startswith("UTMALDG"):
            loads["tma"] += 1
        elif op.startswith("LDGSTS"):
            loads["cp_async"] += 1
        elif op.startswith("LDG") and op != "LDGDEPBAR":     # LDGDEPBAR: commits a cp.async group, loads nothing
            loads["plain"] += 1
    return SassReport(total=total, main=main_r, outer=outer_r, epilogue=epilogue, rest=rest, loops=len(loop_list),
                      dot_loops=len(innermost), loads=loads)
