"""AVX-VNNI back end (Intel client chips since Alder Lake): 256-bit vpdpbusd, 8 rows per vector.

LLVM emits the VEX form where the CPU has avxvnni, and the EVEX form where it has
AVX-512 VNNI with VL (so this back end also runs, and is tested, on Zen 4).  Tiles
for 16 ymm registers: q16 keeps two int32 accumulators and one float accumulator per
token, so 4 tokens plus the weights fill the file.
"""

from ponder.kernels.isa._vnni import Q8_SIGNED, dot_finish, dot_init, dot_step, weight_steps  # noqa: F401

NAME = "avx_vnni"
LANES = 8
REQUIRES = (frozenset({"avx2", "avxvnni", "f16c"}),
            frozenset({"avx2", "avx512vnni", "avx512vl", "f16c"}))
TILES = {8: 6, 16: 4}
ATT_QT, ATT_PT, ATT_VW = 3, 1, 8
