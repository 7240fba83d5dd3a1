# popspool %pre: create the popspool user and group before the files are
# laid down, so /etc/popspool/popspool.ini gets group popspool. The line is
# packaging/popspool.sysusers (the test checks that they agree); Fedora's
# %sysusers_create_package macro does the same.
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers --replace=/usr/lib/sysusers.d/popspool.conf - <<'SYSUSERS'
u popspool - "popspool POP3 receive appliance" /var/lib/popspool /usr/sbin/nologin
SYSUSERS
elif ! getent passwd popspool >/dev/null; then
	getent group popspool >/dev/null || groupadd -r popspool
	useradd -r -g popspool -d /var/lib/popspool -s /usr/sbin/nologin \
		-c "popspool POP3 receive appliance" popspool
fi
