# popspool %post: the spool and state directories now (tmpfiles.d creates
# them at boot too), and on first install enable popspool.service without
# starting it, with /etc/popspool 0750 root:popspool.
# The configuration file is %config(noreplace), mode 0640
# root:popspool, straight from the package.
systemd-tmpfiles --create popspool.conf >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
	# rpm creates /etc/popspool itself (0755 root); it may hold password files.
	chgrp popspool /etc/popspool && chmod 0750 /etc/popspool || :
	systemctl --no-reload enable popspool.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
