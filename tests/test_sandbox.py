"""The python tool's sandbox: one test per limit, each showing the limit holds (and fast: ~0.1 s a
run, the timeouts 1 s)."""

import os
import socket
import threading
import time

import pytest

from ponder.tools import get_tools
from ponder.tools.base import ToolCall
from ponder.tools.python import PythonTool, open_block
from ponder.tools.sandbox import Limits, isolation, run_python

FAST = Limits(wall_seconds=1.5, cpu_seconds=3)


def test_a_program_runs_and_prints():
    r = run_python("from fractions import Fraction\nprint(sum(Fraction(1, k) for k in range(1, 5)))")
    assert r.ok and r.output == "25/12\n"


def test_environment_is_empty_and_home_holds_nothing(monkeypatch):
    monkeypatch.setenv("PONDER_TEST_SECRET", "hunter2-secret")
    r = run_python("import os\nprint(sorted(os.environ.items()))\nh = os.path.expanduser('~')\nprint(h)\n"
                   "try:\n    print(os.listdir(h))\nexcept OSError as e:\n    print('no home:', type(e).__name__)\n"
                   "try:\n    print(open('/proc/1/environ', 'rb').read())\nexcept OSError as e:\n    print('no /proc:', type(e).__name__)")
    assert "hunter2" not in r.output and "PONDER_TEST_SECRET" not in r.output
    assert "no home" in r.output and "no /proc" in r.output
    assert not any(k in r.output for k in ("PATH", "HOME=", "'HOME'"))


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(3)
    got = []
    t = threading.Thread(target=lambda: got.append(_accept(srv)), daemon=True)
    t.start()
    yield srv.getsockname()[1], got
    srv.close()


def _accept(srv):
    try:
        return srv.accept()[1]
    except OSError:
        return None


CONNECT = ("import socket\ntry:\n    s = socket.socket()\n    s.settimeout(1)\n    s.connect(('127.0.0.1', {port}))\n"
           "    print('CONN' + 'ECTED')\nexcept OSError as e:\n    print('refused:', type(e).__name__, e)")


@pytest.mark.parametrize("hook", [True, False], ids=["audit-hook", "kernel-only"])
def test_no_network_even_to_a_local_listener(listener, hook):
    port, got = listener
    if not hook and not isolation()["namespaces"]:
        pytest.skip("no network namespace on this machine: only the audit hook fences the network")
    r = run_python(CONNECT.format(port=port), Limits(audit_hook=hook))
    assert "CONNECTED" not in r.output and "refused" in r.output
    time.sleep(0.1)
    assert not [a for a in got if a]  # the listener saw no connection


def test_writing_outside_its_folder_fails(tmp_path):
    targets = [str(tmp_path / "escaped.txt"), f"/tmp/ponder-escape-{os.getpid()}", f"/var/tmp/ponder-escape-{os.getpid()}"]
    prog = (f"for p in {targets!r}:\n    try:\n        open(p, 'w').write('x')\n        print('wrote', p)\n"
            "    except OSError as e:\n        print('refused', type(e).__name__)")
    for hook in (True, False):
        if not hook and not isolation()["namespaces"]:
            continue  # without a private mount namespace only the audit hook stops writes to /tmp
        r = run_python(prog, Limits(audit_hook=hook))
        if hook:
            assert r.ok and r.output.count("refused PermissionError") == 3
        # without the hook, /tmp and /var/tmp are private tmpfs mounts: what is written there vanishes
        assert not any(os.path.exists(t) for t in targets)
    r = run_python("open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())")
    assert r.ok and r.output == "ok\n"


def test_infinite_loop_is_killed_at_the_wall_clock():
    t0 = time.perf_counter()
    r = run_python("while True:\n    pass", FAST)
    assert r.timed_out and time.perf_counter() - t0 < 4


def test_sleeping_program_is_killed_at_the_wall_clock():
    r = run_python("import time\ntime.sleep(60)", FAST)
    assert r.timed_out and r.seconds < 4


def test_memory_hog_is_stopped():
    r = run_python("x = []\nwhile True:\n    x.append(bytearray(10**7))", Limits(memory_bytes=256 << 20))
    assert not r.ok and "MemoryError" in r.output


def _processes_of(uid):
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/status") as f:
                    n += any(ln.startswith("Uid:") and ln.split()[1] == str(uid) for ln in f)
            except OSError:
                pass
    return n


def test_fork_bomb_is_contained():
    before = _processes_of(65534)
    t0 = time.perf_counter()
    r = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", FAST)
    assert r.timed_out or not r.ok
    assert time.perf_counter() - t0 < 5
    if isolation()["namespaces"] and isolation()["drops_to_nobody"]:
        deadline = time.time() + 3  # the namespace's processes are reaped asynchronously
        while _processes_of(65534) > before and time.time() < deadline:
            time.sleep(0.05)
        assert _processes_of(65534) <= before


def test_huge_output_is_truncated():
    r = run_python("while True:\n    print('spam' * 1000)", Limits(max_output=500))
    assert r.truncated and len(r.output) == 500


def test_subprocess_and_imports_beyond_the_standard_set_are_refused():
    r = run_python("import os\nos.system('echo ' + 'esc' + 'aped')")
    assert "escaped" not in r.output and "PermissionError" in r.output
    r = run_python("import numpy")
    assert "ModuleNotFoundError" in r.output


def test_python_tool_finds_the_block_and_splices_its_output():
    tool = get_tools("python")[0]
    text = "Let me compute.\n```python\nprint(17 * 23)\n"
    call = tool.find_call(text)
    assert call == ToolCall("python", "print(17 * 23)\n")
    res = tool.run(call)
    assert res.ok and res.value == "391" and res.output == "\n```output\n391\n```\n"
    assert tool.find_call("Some prose ") is None
    assert open_block("```python\nx = 1\n```\n```output\n\n```\nThen ") is None


def test_python_tool_errors_and_timeouts_are_results_not_exceptions():
    tool = PythonTool(FAST)
    res = tool.run(ToolCall("python", "print(1/0)"))
    assert not res.ok and res.error == "ZeroDivisionError: division by zero" and "ZeroDivisionError" in res.output
    res = tool.run(ToolCall("python", "while True: pass"))
    assert not res.ok and res.error == "timed out" and "timed out after 1.5 s" in res.output


def test_programs_that_cannot_be_passed_are_refused_not_raised():
    # the bound is on UTF-8 bytes: 40,000 two-byte characters pass a character count but not the
    # kernel's 128 KiB limit on one argument
    wide = run_python('s = "' + "é" * 40_000 + '"\nprint(len(s))')
    assert wide.returncode == 1 and "longer than" in wide.output
    surrogate = run_python('print("\ud800")')
    assert surrogate.returncode == 1 and "lone surrogate" in surrogate.output
    assert run_python("print(1)\0").output.startswith("refused: NUL byte")
