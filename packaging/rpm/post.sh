# %post of the qsupervisor rpm ($1: 1 install, 2 upgrade).
# Byte-compile for the Python the package is built for (the path names its version).
for sitelib in /usr/lib/python3.*/site-packages/qsupervisor; do
    [ -d "$sitelib" ] && python3 -m compileall -q "$sitelib" >/dev/null 2>&1 || :
done
if [ -d /run/systemd/system ]; then
    # Not enabled or started on install: configure the broker and programs first, then
    # `systemctl enable --now qsupervisor` (the same policy as the .deb).
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
