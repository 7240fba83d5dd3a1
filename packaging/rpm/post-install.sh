# popspool %post: the spool and state directories now (tmpfiles.d creates
# them at boot too, and takes an older state directory from 0750 to 0700),
# and on first install enable popspool.service without starting it, with
# /etc/popspool 0700 popspool:root. The configuration file is
# %config(noreplace), mode 0600 popspool:root, straight from the package.
# Spool consumers join group popspool, so nothing secret may be readable
# by that group (popspool.ini(5), SECRETS).
systemd-tmpfiles --create popspool.conf >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
	# rpm creates /etc/popspool itself (0755 root); it may hold password files.
	chown popspool:root /etc/popspool && chmod 0700 /etc/popspool || :
	systemctl --no-reload enable popspool.service >/dev/null 2>&1 || :
else
	# Older packages made /etc/popspool root:popspool 0750 and the
	# configuration root:popspool 0640 (which rpm keeps when it was
	# changed); move exactly those to the new owner and mode, once, and
	# leave an administrator's own choice alone.
	migrated=
	for entry in "/etc/popspool 750 700" "/etc/popspool/popspool.ini 640 600"; do
		set -- $entry
		if [ "$(stat -c '%U:%G %a' "$1" 2>/dev/null)" = "root:popspool $2" ]; then
			chown popspool:root "$1" && chmod "0$3" "$1" && migrated=yes || :
		fi
	done
	if [ -n "$migrated" ]; then
		echo "popspool: /etc/popspool is now popspool:root 0700 and popspool.ini popspool:root 0600:" \
			"members of group popspool (spool consumers) can no longer read the configuration;" \
			"'popspool --check' names any other secret file they can still read." >&2
	fi
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
