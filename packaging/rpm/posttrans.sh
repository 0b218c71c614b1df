# %posttrans of the qsupervisor rpm: runs from the package now installed, once the whole
# transaction is done (after an install or an upgrade; an erase runs none), so the new
# code and any library updated with it are all in place. A running daemon of another
# version is brought onto the installed code: re-executed in place, or else restarted.
# (The %postun of the package it replaced ran before: since this version, that one
# restarts nothing on an upgrade; older versions' did, and the daemon then runs the
# installed version already.)
CONFIG=/etc/qsupervisor/queues.yaml

restart_service() {
    systemctl try-restart qsupervisor.service >/dev/null 2>&1
}

# -- on an upgrade, a running daemon onto the installed code ------------------------------
# The same block is in packaging/deb/postinst and packaging/rpm/posttrans.sh
# (tests/packaging/test_upgrade_scripts.py keeps them so and runs every branch).
#
# `qsupervisorctl reexec --all`: the daemon re-executes itself in place (same pid, same
# socket, every job in hand goes on), then reloads each program with --preload, one at a
# time, so that leaders and workers run the new code too (each old worker finishes its job
# first, within its program's stop_timeout). A daemon that cannot (its version has no
# `reexec`, or it refused: the new code failed its check) is restarted gracefully, as
# before, unless the installed qsupervisord rejects the configuration: that restart would
# leave the service down, so the daemon runs on as it was. Nothing here fails the install.
#
# reexec_daemon CAN_RESTART: CAN_RESTART "yes" when restart_service can restart the
# service (systemd), "" when nothing but its administrator can (no systemd).
REEXEC_TIMEOUT=600  # seconds apt waits for the reloads; past it, they go on in the daemon

daemon_version() {  # the version the running daemon reports, or nothing
    qsupervisorctl -c "$CONFIG" --timeout 30 version 2>/dev/null |
        sed -n 's/^qsupervisord \([^ ]*\) .*/\1/p'
}

reexec_daemon() {
    installed=$(qsupervisord --version 2>/dev/null | sed -n 's/^qsupervisord //p')
    running=$(daemon_version)
    if [ -n "$running" ] && [ "$running" = "$installed" ]; then
        echo "qsupervisor: the running daemon is qsupervisord $running already: left as it is"
        return 0
    fi
    echo "qsupervisor: qsupervisorctl reexec --all: qsupervisord ${running:-?} -> ${installed:-?}, in place"
    rc=0
    out=$(qsupervisorctl -c "$CONFIG" --timeout "$REEXEC_TIMEOUT" reexec --all 2>&1) || rc=$?
    [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/  /'
    if [ "$rc" = 0 ]; then
        echo "qsupervisor: re-executed in place; the daemon and every program run qsupervisord $installed, no job was interrupted"
        return 0
    fi
    now=$(daemon_version)
    if [ -n "$now" ] && [ "$now" = "$installed" ]; then
        echo "qsupervisor: re-executed in place; the daemon runs qsupervisord $now, but not every program is reloaded yet (above): see qsupervisorctl status"
        return 0
    fi
    case $out in
        *"unknown command 'reexec'"*) why="qsupervisord ${now:-$running} has no reexec" ;;
        *) why=$(printf '%s\n' "$out" | sed -n '$s/^qsupervisorctl: //p') ;;
    esac
    if [ -z "$1" ]; then
        echo "qsupervisor: not re-executed (${why:-exit status $rc}); the daemon runs qsupervisord ${now:-?} until it is restarted"
        return 0
    fi
    if ! check=$(qsupervisord --check -c "$CONFIG" 2>&1); then
        echo "qsupervisor: not re-executed (${why:-exit status $rc}), and not restarted: the installed qsupervisord rejects $CONFIG, so the service would not start again:"
        printf '%s\n' "$check" | sed 's/^/  /'
        echo "qsupervisor: the daemon runs qsupervisord ${now:-?} on; correct the file, then: systemctl restart qsupervisor"
        return 0
    fi
    echo "qsupervisor: not re-executed (${why:-exit status $rc}): restarting qsupervisor.service (each job in hand finishes first)"
    restart_service || true
}
# -- end of the block ---------------------------------------------------------------------

if [ -d /run/systemd/system ]; then
    # Not running (a first install, a stopped service): nothing to do.
    if systemctl is-active --quiet qsupervisor.service; then
        reexec_daemon yes || :
    fi
elif [ -S /run/qsupervisor/qsupervisord.sock ] && [ -r "$CONFIG" ]; then
    # No systemd (a container): a daemon running the packaged configuration is
    # re-executed in place too; nothing here can restart it if it cannot.
    reexec_daemon "" || :
fi
exit 0
