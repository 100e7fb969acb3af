"""The first-run notice: a compile says so once on stderr, one line per kernel, and its time is counted."""

import io

from numba import njit

from ponder.cli import compile_notice
from ponder.kernels import numba_setup


def test_compiling_is_announced_once_and_timed():
    out = io.StringIO()
    notice = compile_notice.install(out)
    notice.stream = out  # the process-wide notice may predate this test
    before_kernels, before_seconds = notice.kernels, notice.seconds
    notice._summary = lambda: None  # no exit line from the test process
    numba_setup.prepare()  # what every module of Numba kernels does on import: forward its compiles

    @njit(cache=False)
    def helper(x):
        return x + 1

    @njit(cache=False)
    def outer_kernel_1234abcd5678(x):  # a trailing hash is not shown
        return helper(x) * 2

    assert outer_kernel_1234abcd5678(3) == 8
    assert outer_kernel_1234abcd5678(4) == 10  # compiled already: no new line
    text = out.getvalue()
    assert notice.kernels == before_kernels + 1 and notice.seconds > before_seconds
    assert text.count("outer_kernel") == 1 and "1234abcd" not in text and "helper" not in text
    if before_kernels == 0:
        assert text.startswith("ponder: compiling kernels for this CPU (") and "once" in text
    assert compile_notice.install() is notice
