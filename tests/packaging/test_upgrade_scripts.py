"""What the packages' scripts do to a running daemon on an upgrade: the block shared by the
.deb's postinst and the rpm's %posttrans, run with a fake qsupervisorctl, qsupervisord and
restart, through every branch. CI's .ci/systemd upgrades a real service (the re-exec); the
branches where the daemon cannot re-execute are only reached here.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
SCRIPTS = (PACKAGING / "deb" / "postinst", PACKAGING / "rpm" / "posttrans.sh")
BEGIN = "# -- on an upgrade, a running daemon onto the installed code"
END = "# -- end of the block"

OLD, NEW = "0.1.0", "0.2.0"
UNKNOWN = ("qsupervisorctl: unknown command 'reexec'; known: status, start, stop, restart, "
           "reload, scale, reread, update, signal, pid, tail, reopen, shutdown, fleet, version")
REFUSED = ("qsupervisorctl: the new code failed its check (exit status 1): ImportError: "
           "cannot import name 'x'; the daemon runs on unchanged (its log has the whole output)")
REEXECUTED = f"re-executed in 41.2 ms: pid 812, qsupervisord {OLD} -> {NEW}"


def block(script: Path) -> str:
    text = script.read_text()
    start, end = text.index(BEGIN), text.index(END)
    return text[start:end]


def test_the_deb_and_the_rpm_share_the_block() -> None:
    assert block(SCRIPTS[0]) == block(SCRIPTS[1])


def test_the_scripts_parse() -> None:
    for script in (*SCRIPTS, PACKAGING / "rpm" / "postun.sh"):
        subprocess.run(["sh", "-n", str(script)], check=True)


def fake(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def run_block(tmp_path: Path, *, running: str | None, reexec_rc: int = 0,
              reexec_out: str = REEXECUTED, after: str | None = None,
              check_ok: bool = True, can_restart: str = "yes") -> tuple[str, list[str]]:
    """Run reexec_daemon CAN_RESTART against a fake daemon that runs version `running`
    (None: unreachable), whose `reexec --all` prints `reexec_out`, exits `reexec_rc` and
    leaves it running `after` (default: the installed version on success, else as it was).
    Returns what the block printed and the calls the fakes saw."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls"
    state = tmp_path / "running"
    if running is not None:
        state.write_text(running)
    if after is None:
        after = NEW if reexec_rc == 0 else running
    fake(bin_dir / "qsupervisorctl", f"""
echo "qsupervisorctl $*" >>{calls}
case "$*" in
    *" version") [ -s {state} ] || {{ echo "qsupervisorctl: cannot reach qsupervisord" >&2; exit 4; }}
        echo "qsupervisord $(cat {state}) (protocol 1)" ;;
    *" reexec --all")
        {f"printf '%s' {shlex.quote(after)} >{state}" if after is not None else f"rm -f {state}"}
        [ {reexec_rc} = 0 ] && echo {shlex.quote(reexec_out)} || echo {shlex.quote(reexec_out)} >&2
        exit {reexec_rc} ;;
    *) exit 2 ;;
esac
""")
    fake(bin_dir / "qsupervisord", f"""
echo "qsupervisord $*" >>{calls}
case "$1" in
    --version) echo "qsupervisord {NEW}" ;;
    --check) {"echo '/etc/qsupervisor/queues.yaml: OK (1 programs)'" if check_ok else
              "echo 'conf.d/a.yaml:3: programs.a.workers: expected an integer' >&2; exit 2"} ;;
esac
""")
    script = (f"CONFIG=/etc/qsupervisor/queues.yaml\n"
              f"restart_service() {{ echo restart_service >>{calls}; }}\n"
              f"{block(SCRIPTS[0])}\n"
              f"set -e\nreexec_daemon {shlex.quote(can_restart)} || true\necho done\n")
    run = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert run.stderr == ""
    assert run.stdout.endswith("done\n")
    seen = calls.read_text().splitlines() if calls.exists() else []
    return run.stdout, seen


def reexecs(calls: list[str]) -> int:
    return sum(c.endswith(" reexec --all") for c in calls)


def test_a_daemon_that_re_executes_is_not_restarted(tmp_path: Path) -> None:
    out, calls = run_block(tmp_path, running=OLD)
    assert reexecs(calls) == 1
    assert "qsupervisorctl -c /etc/qsupervisor/queues.yaml --timeout 600 reexec --all" in calls
    assert "restart_service" not in calls
    assert f"  {REEXECUTED}\n" in out
    assert f"re-executed in place; the daemon and every program run qsupervisord {NEW}" in out


def test_a_daemon_without_reexec_is_restarted(tmp_path: Path) -> None:
    out, calls = run_block(tmp_path, running=OLD, reexec_rc=2, reexec_out=UNKNOWN)
    assert calls[-1] == "restart_service"
    assert f"not re-executed (qsupervisord {OLD} has no reexec): restarting" in out


def test_a_refused_re_exec_restarts_when_the_new_code_takes_the_configuration(
        tmp_path: Path) -> None:
    out, calls = run_block(tmp_path, running=OLD, reexec_rc=1, reexec_out=REFUSED)
    assert "qsupervisord --check -c /etc/qsupervisor/queues.yaml" in calls
    assert calls[-1] == "restart_service"
    assert "not re-executed (the new code failed its check (exit status 1): ImportError" in out


def test_no_restart_into_a_configuration_the_new_code_rejects(tmp_path: Path) -> None:
    out, calls = run_block(tmp_path, running=OLD, reexec_rc=1, reexec_out=REFUSED,
                           check_ok=False)
    assert "restart_service" not in calls
    assert "and not restarted: the installed qsupervisord rejects" in out
    assert "  conf.d/a.yaml:3: programs.a.workers: expected an integer\n" in out
    assert f"the daemon runs qsupervisord {OLD} on" in out


@pytest.mark.parametrize("why", [
    "qsupervisorctl: no reply within 600.0s",
    "qsupervisorctl: reloaded with --preload: a: FATAL",
])
def test_a_re_exec_whose_reloads_did_not_all_finish_is_not_restarted(
        tmp_path: Path, why: str) -> None:
    out, calls = run_block(tmp_path, running=OLD, reexec_rc=1, reexec_out=why, after=NEW)
    assert "restart_service" not in calls
    assert f"the daemon runs qsupervisord {NEW}, but not every program is reloaded yet" in out


def test_an_unreachable_daemon_is_restarted(tmp_path: Path) -> None:
    out, calls = run_block(tmp_path, running=None, reexec_rc=4,
                           reexec_out="qsupervisorctl: cannot reach qsupervisord")
    assert calls[-1] == "restart_service"
    assert "not re-executed (cannot reach qsupervisord): restarting" in out


def test_a_daemon_on_the_installed_version_is_left_alone(tmp_path: Path) -> None:
    out, calls = run_block(tmp_path, running=NEW)
    assert reexecs(calls) == 0 and "restart_service" not in calls
    assert f"the running daemon is qsupervisord {NEW} already: left as it is" in out


def test_without_systemd_nothing_restarts(tmp_path: Path) -> None:
    out, calls = run_block(tmp_path, running=OLD, reexec_rc=2, reexec_out=UNKNOWN,
                           can_restart="")
    assert "restart_service" not in calls
    assert f"the daemon runs qsupervisord {OLD} until it is restarted" in out


def test_nothing_it_prints_reads_as_a_warning(tmp_path: Path) -> None:
    """apt's log is searched for warnings (.ci/systemd): a fallback is news, not one."""
    for scenario in ({"reexec_rc": 2, "reexec_out": UNKNOWN},
                     {"reexec_rc": 1, "reexec_out": REFUSED, "check_ok": False}):
        out, _ = run_block(tmp_path / str(len(scenario)), running=OLD, **scenario)
        assert "warning" not in out.lower()
