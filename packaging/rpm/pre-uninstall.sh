# popspool %preun: on erase (not upgrade), disable and stop the service and
# any popspool@ instances, as %systemd_preun does.
if [ "$1" -eq 0 ]; then
	systemctl --no-reload disable popspool.service >/dev/null 2>&1 || :
	if [ -d /run/systemd/system ]; then
		systemctl stop popspool.service 'popspool@*.service' >/dev/null 2>&1 || :
	fi
fi
