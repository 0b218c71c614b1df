# %preun of the qsupervisor rpm ($1: 0 erase, 1 upgrade).
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now qsupervisor.service >/dev/null 2>&1 || :
    elif [ -S /run/qsupervisor/qsupervisord.sock ]; then
        # No systemd (a container): stop a daemon of the packaged configuration.
        /usr/bin/qsupervisorctl -c /etc/qsupervisor/queues.yaml --timeout 600 shutdown \
            >/dev/null 2>&1 || :
    fi
    # The byte-compiled files %post made are not in the package's file list.
    find /usr/lib/python3.*/site-packages/qsupervisor -name __pycache__ -type d \
        -exec rm -rf {} + 2>/dev/null || :
fi
exit 0
