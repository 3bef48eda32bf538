"""Postfix's smtp-sink as the ceiling of the load benchmark (tests/bench/load.py): it answers
every command at once and discards the mail, so its intake is what smtp-source and the loopback
can do on this machine, and nothing is delivered."""

import os
import signal
import subprocess

from benchutil import STARTUP_TIMEOUT, STOP_TIMEOUT, free_port, log, read_stat, unique_name, wait_for_port

SMTP_SINK = "/usr/sbin/smtp-sink"
# Listen backlog: generous, so that 50 concurrent clients never wait for accept().
SINK_BACKLOG = 256


def find_smtp_sink():
    """/usr/sbin/smtp-sink (Debian's postfix package), else on PATH."""
    if os.access(SMTP_SINK, os.X_OK):
        return SMTP_SINK
    for d in os.environ.get("PATH", "").split(os.pathsep):
        p = os.path.join(d, "smtp-sink")
        if os.access(p, os.X_OK):
            return p
    return None


class SmtpSink:
    """One smtp-sink process on a free loopback port. The same interface as Corvid and Postfix
    for run_one(); `discards` tells it not to wait for a delivery."""
    name = "sink"
    rcpt = "rcpt@sink.test"
    discards = True

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, unique_name("sink"))
        os.makedirs(self.dir, mode=0o755)
        self.maildir_new = os.path.join(self.dir, "none")  # never written
        self.log_path = os.path.join(self.dir, "sink.log")
        self.proc = None
        self.port = None
        self.hwm_resettable = None

    def start(self):
        binary = find_smtp_sink()
        if binary is None:
            raise SystemExit("smtp-sink not found: apt-get install postfix (it ships /usr/sbin/smtp-sink)")
        self.port = free_port()
        # As root smtp-sink insists on -u (it drops privileges after binding).
        user = ["-u", "postfix"] if os.geteuid() == 0 else []
        logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, *user, f"127.0.0.1:{self.port}", str(SINK_BACKLOG)],
                                     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=self.dir)
        logf.close()
        if not wait_for_port(self.port, STARTUP_TIMEOUT):
            self.stop()
            raise SystemExit(f"smtp-sink does not greet on port {self.port}")
        log(f"smtp-sink pid {self.proc.pid} on 127.0.0.1:{self.port}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cpu_ticks(self):
        st = read_stat(self.proc.pid)
        if st is None:
            raise RuntimeError("smtp-sink is gone")
        return st[1] + st[2]

    def pids(self):
        return [self.proc.pid]

    def reset_peak(self):
        pass

    def peak_kb(self):
        return None  # sampled

    def mark_log(self):
        pass

    def log_problems(self):
        return {}, []

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        log("smtp-sink stopped")
