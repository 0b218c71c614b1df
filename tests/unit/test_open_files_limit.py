"""The master raises its soft open-files limit to the hard one (two descriptors per
worker run out at systemd's 1024 near 500 workers) and its children go back to the limit
the daemon started with (procutil.raise_open_files_limit / restore_open_files_limit).
Each case runs in a forked child, so the test process keeps its own limits."""

from __future__ import annotations

import os
import resource
from typing import Callable

from qsupervisor import procutil


def in_child(check: Callable[[], None]) -> None:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            check()
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_master_takes_the_hard_limit_and_its_children_get_the_old_one_back() -> None:
    def check() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert hard != resource.RLIM_INFINITY and hard > 1024
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # systemd's default soft
        assert procutil.raise_open_files_limit() == (1024, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        # Descriptors past the old limit can be had now.
        fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        for fd in fds:
            os.close(fd)
        procutil.restore_open_files_limit()  # what a leader and the herald do
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (1024, hard)
    in_child(check)


def test_a_soft_limit_already_at_the_hard_one_is_left_alone() -> None:
    def check() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        assert procutil.raise_open_files_limit() == (hard, hard)
        procutil.restore_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    in_child(check)
