"""Runs a server as a child and ends it when the process that started us dies.

``python -I path/to/server_watchdog.py PARENT_PID -- COMMAND ...``

It imports only the standard library, and is run by its file rather than with
``-m`` so that starting it does not import the ``minionflow.nodes`` package.

The embedded model server is started through this, so a minionflow process that
is killed (SIGKILL, a crash) does not leave a llama.cpp server behind holding a
gigabyte and the CPU. SIGTERM and SIGINT are passed on to the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    parent = int(argv[0])
    command = argv[argv.index("--") + 1 :]
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while child.poll() is None:
        if os.getppid() != parent:  # our parent died: we were re-parented
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
            break
        time.sleep(0.5)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
