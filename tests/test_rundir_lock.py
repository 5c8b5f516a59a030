"""The run lock where the filesystem has no flock (Lustre without flock answers ENOSYS): a warning once, then
an exclusive lock file with stale-lock detection; never a crash."""

import errno
import fcntl
import os
import socket
import subprocess
import sys

import pytest

from optimlab import rundir
from optimlab.errors import ConfigError
from optimlab.rundir import PID_LOCK, RunLock, is_locked
from optimlab.sweep.state import SweepLock


@pytest.fixture
def no_flock(monkeypatch):
    def flock(fd, operation):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setitem(rundir._WARNED, "no_flock", False)


def test_without_flock_a_lock_file_excludes_a_second_holder(tmp_path, no_flock, capsys):
    first, second = RunLock(tmp_path / "run"), RunLock(tmp_path / "run")
    first.acquire()
    assert (tmp_path / "run" / PID_LOCK).read_text().split() == [socket.gethostname(), str(os.getpid())]
    assert is_locked(tmp_path / "run")
    with pytest.raises(ConfigError, match=f"in use by another process.*delete .*{PID_LOCK}"):
        second.acquire()
    first.release()
    assert not (tmp_path / "run" / PID_LOCK).exists() and not is_locked(tmp_path / "run")
    second.acquire()
    second.release()
    err = capsys.readouterr().err
    assert err.count("has no flock") == 1 and "Function not implemented" in err  # warned once


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path, no_flock):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / PID_LOCK).write_text(f"{socket.gethostname()} {int(dead.stdout)}\n")
    assert not is_locked(tmp_path / "run")
    lock = RunLock(tmp_path / "run")
    lock.acquire()
    assert (tmp_path / "run" / PID_LOCK).read_text().split()[1] == str(os.getpid())
    lock.release()


def test_a_lock_file_of_another_host_is_respected(tmp_path, no_flock):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / PID_LOCK).write_text("some-other-node 1\n")
    assert is_locked(tmp_path / "run")
    with pytest.raises(ConfigError, match="host some-other-node, pid 1"):
        RunLock(tmp_path / "run").acquire()


def test_other_flock_errors_still_raise(tmp_path, monkeypatch):
    def flock(fd, operation):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(fcntl, "flock", flock)
    with pytest.raises(OSError, match="I/O error"):
        RunLock(tmp_path / "run").acquire()


def test_sweep_lock_falls_back_too(tmp_path, no_flock):
    first, second = SweepLock(tmp_path), SweepLock(tmp_path)
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_with_flock_nothing_changes(tmp_path):
    lock = RunLock(tmp_path / "run")
    lock.acquire()
    assert is_locked(tmp_path / "run") and not (tmp_path / "run" / PID_LOCK).exists()
    lock.release()
