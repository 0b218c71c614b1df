# %postun of the qsupervisor rpm ($1: 0 erase, 1 upgrade). This runs in the OLD package
# after the new one is installed, so an upgrade restarts a running service here: only a
# daemon restart loads the new qsupervisor code; the stop is graceful.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart qsupervisor.service >/dev/null 2>&1 || :
    fi
fi
# The qsupervisor user and group stay (the Fedora packaging guidelines: a uid must never
# be reused for files a removed package left behind); `userdel qsupervisor` removes them.
exit 0
