# popspool %postun: after an upgrade, restart a running service on the new
# binary. RPM has no purge: erasing keeps /var/spool/popspool,
# /var/lib/popspool and the popspool user, and a modified popspool.ini is
# kept as popspool.ini.rpmsave.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart popspool.service >/dev/null 2>&1 || :
	fi
fi
