# %pre of the qsupervisor rpm ($1: 1 install, 2 upgrade). The account exists before the
# files are unpacked, so /etc/qsupervisor/queues.yaml can belong to group qsupervisor.
getent group qsupervisor >/dev/null || groupadd -r qsupervisor
getent passwd qsupervisor >/dev/null ||
    useradd -r -g qsupervisor -d /var/lib/qsupervisor -M -s /sbin/nologin \
        -c "qsupervisor daemon" qsupervisor
exit 0
