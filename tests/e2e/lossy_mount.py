"""LossyMount: runs lossyfs (lossyfs.py) as its own process for a test, and cuts its power."""

from __future__ import annotations

import os
import subprocess
import sys
import time

LOSSYFS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lossyfs.py")


class LossyMount:
    """A lossyfs process serving `backing` at `mountpoint`, for tests: `mount()`, then
    `cut_power()` (SIGKILL, then a lazy unmount) or `unmount()`; both lose what was not synced."""

    def __init__(self, backing: str, mountpoint: str, log: str):
        self.backing, self.mountpoint, self.log = backing, mountpoint, log
        self.proc: subprocess.Popen | None = None
        os.makedirs(backing, exist_ok=True)
        os.makedirs(mountpoint, exist_ok=True)

    def mount(self, timeout: float = 15.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, LOSSYFS, self.backing, self.mountpoint],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.cut_power()
                with open(self.log, errors="replace") as f:
                    raise RuntimeError(f"lossyfs did not mount {self.mountpoint}:\n{f.read()[-3000:]}")
            time.sleep(0.02)

    def cut_power(self) -> None:
        """Everything not synced is lost: the process that held it is killed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self._detach()

    def unmount(self) -> None:
        self._detach()
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def mounted(self) -> bool:
        """In the mount table (os.path.ismount is False for a mount whose server died)."""
        target = os.path.realpath(self.mountpoint)
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == target for line in f)

    def _detach(self) -> None:
        # Lazy: a process that still has a file open there does not keep the mount busy.
        for cmd in (["umount", "-l", self.mountpoint], ["fusermount3", "-u", "-z", self.mountpoint],
                    ["fusermount", "-u", "-z", self.mountpoint]):
            if not self.mounted():
                return
            try:
                subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                continue
