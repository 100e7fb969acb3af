"""The NumPy dequantization reference agrees with the gguf package on every format."""

import gguf
import numpy as np
import pytest

from ponder.kernels import quant_formats


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4_1", "Q8_0", "F16", "BF16", "F32"])
def test_dequantize_matches_gguf_package(fmt):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 96)).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[fmt]
    raw = gguf.quants.quantize(w, qtype) if fmt != "F32" else w
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(8, -1)
    ours = quant_formats.dequantize(fmt, raw, 8, 96)
    theirs = gguf.quants.dequantize(raw, qtype) if fmt != "F32" else w
    np.testing.assert_array_equal(ours, np.asarray(theirs, np.float32).reshape(8, 96))


def test_row_bytes():
    assert quant_formats.row_bytes("Q4_1", 576) == 18 * 20
    assert quant_formats.row_bytes("Q8_0", 64) == 2 * 34
    assert quant_formats.row_bytes("BF16", 10) == 20
