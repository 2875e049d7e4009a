"""``exit_after_atexit``: the exit code, non-daemon threads joined first, then every ``atexit``
handler (last registered first, one that raises does not stop the others), and nothing of
Python's finalization after them. A real interpreter in a subprocess: the function ends it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_threads_then_atexit_handlers_run_and_the_code_is_kept(tmp_path):
    log = tmp_path / "log"
    program = textwrap.dedent(
        f"""
        import atexit, threading, time
        from hfai_runtime.distributed.prompt_exit import exit_after_atexit

        def note(word):
            with open({str(log)!r}, "a") as f:
                f.write(word + "\\n")

        class Finalized:
            def __del__(self):
                note("finalized")

        keep = Finalized()  # a module global: freed only by the interpreter's finalization
        atexit.register(note, "first registered")
        atexit.register(lambda: 1 / 0)
        atexit.register(note, "last registered")
        threading.Thread(target=lambda: (time.sleep(0.3), note("thread"))).start()
        try:
            exit_after_atexit(143)
        finally:
            note("finally")
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr
    assert log.read_text().split("\n")[:-1] == ["thread", "last registered", "first registered"]
    assert "ZeroDivisionError" in done.stderr  # printed, as Python prints a failing handler
