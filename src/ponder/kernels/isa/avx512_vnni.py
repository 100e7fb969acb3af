"""AVX-512 VNNI back end (Zen 4, Ice Lake and later Xeons): 512-bit vpdpbusd, 16 rows per vector.

Tiles for 32 zmm registers.  q8 keeps one int32 accumulator per token: past 8
tokens their pointers spill.  q16 keeps two (high and low halves): at 8 tokens the
zmm registers spill and M=256 ran 1.8x slower than at 6 (4 and 6 tie at M=256; 6
wins at M=16).
"""

from ponder.kernels.isa._vnni import Q8_SIGNED, dot_finish, dot_init, dot_step, weight_steps  # noqa: F401

NAME = "avx512_vnni"
LANES = 16
REQUIRES = (frozenset({"avx512f", "avx512bw", "avx512vnni", "f16c"}),)
TILES = {8: 8, 16: 6}
# attention: rows sharing a pass over a block's keys / values, and float lanes per vector
ATT_QT, ATT_PT, ATT_VW = 6, 4, 16
