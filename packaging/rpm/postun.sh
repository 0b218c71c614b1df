# %postun of the qsupervisor rpm ($1: 0 erase, 1 upgrade). This runs in the OLD package
# after the new one is installed. On an upgrade the new package's %posttrans brings a
# running daemon onto the new code (qsupervisorctl reexec --all, or else a restart), at the
# end of the transaction; so nothing is restarted here, unless the package now installed
# predates that: a downgrade to a version whose qsupervisorctl has no `reexec` (and whose
# rpm no %posttrans) is restarted here, as those versions did (gracefully).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ] && ! /usr/bin/qsupervisorctl reexec --help >/dev/null 2>&1; then
        systemctl try-restart qsupervisor.service >/dev/null 2>&1 || :
    fi
fi
# The qsupervisor user and group stay (the Fedora packaging guidelines: a uid must never
# be reused for files a removed package left behind); `userdel qsupervisor` removes them.
exit 0
