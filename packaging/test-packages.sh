#!/usr/bin/env bash
# Builds popspool's .deb and .rpm from this tree and proves that they
# install, run and uninstall as documented. Run as root on Debian 12;
# tests/suite/packaging.rs runs it as part of the suite (tests/run.sh).
#
#   bash packaging/test-packages.sh           build, inspect, install, check
#   bash packaging/test-packages.sh --tools   only install the tools it needs
#
# Where the packages are installed: a scratch root that is an overlay of
# this machine's own file system (lower: /, upper: a temp dir), in a private
# mount namespace. dpkg and rpm run chrooted inside it with their real
# maintainer scripts, against the machine's real package database, so the
# dependencies are checked for real and nothing on the machine changes; the
# namespace takes the mounts with it when the script ends. debootstrap would
# give a cleaner root but needs a few minutes and a Debian mirror per run,
# and `dpkg --root` on an empty root cannot satisfy Depends or run the
# scripts (they chroot into the root, which has no shell).
#
# No systemd runs as PID 1 here, so the maintainer scripts take their
# "systemd not running" paths (enable, but no start, stop or daemon-reload),
# as during an image build. The service itself is then tried under a real
# systemd: systemd-nspawn boots a third overlay root with the .deb installed
# (this machine's own systemd as the container's PID 1) and the test checks
# that popspool.service comes up in its sandbox and talks sd_notify.
set -euo pipefail

# The versions the packaging metadata was written and tested against.
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
# systemd-analyze security's exposure for the units (0 best, 10 worst);
# they measure 1.1 with systemd 252. A higher figure means hardening was lost.
MAX_EXPOSURE=1.2
# What issue 7 asks of both units, line for line.
REQUIRED_UNIT_LINES=(
	"Type=notify"
	"ExecReload=/bin/kill -HUP \$MAINPID"
	"Restart=on-failure"
	"User=popspool"
	"NoNewPrivileges=yes"
	"ProtectSystem=strict"
	"ReadWritePaths=/var/spool/popspool"
	"ProtectHome=yes"
	"PrivateTmp=yes"
	"PrivateDevices=yes"
	"CapabilityBoundingSet="
	"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"
	"SystemCallFilter=@system-service"
	"LimitCORE=0"
	"MemoryHigh=256M"
	"MemoryMax=512M"
	"TasksMax=32"
)

cd "$(dirname "$0")/.."
top=$PWD

say() { echo "test-packages: $*"; }
die() {
	echo "test-packages: FAIL: $*" >&2
	exit 1
}

install_tools() {
	if ! cargo deb --version >/dev/null 2>&1; then
		say "installing cargo-deb $CARGO_DEB_VERSION (compiles for a few minutes)"
		cargo install --locked "cargo-deb@$CARGO_DEB_VERSION"
	fi
	if ! cargo generate-rpm --version >/dev/null 2>&1; then
		say "installing cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION"
		cargo install --locked "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION"
	fi
	local missing=()
	command -v rpm >/dev/null || missing+=(rpm)
	# cargo-deb's $auto Depends (libc6, libssl3) come from dpkg-shlibdeps.
	command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
	command -v systemd-analyze >/dev/null || missing+=(systemd)
	command -v unshare >/dev/null || missing+=(util-linux)
	command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
	if ((${#missing[@]})); then
		[[ $(id -u) == 0 ]] || die "run as root to install ${missing[*]}"
		say "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update
		apt-get install -y --no-install-recommends "${missing[@]}"
	fi
}

# --- checks -----------------------------------------------------------------

# contains TEXT NEEDLE WHAT
contains() {
	[[ $1 == *"$2"* ]] || die "$3: no '$2' in:
$1"
}
# lacks TEXT NEEDLE WHAT
lacks() {
	[[ $1 != *"$2"* ]] || die "$3: unexpected '$2' in:
$1"
}

# The overlay root the package managers run in.
R=
in_root() { chroot "$R" "$@"; }

# stat_is PATH "MODE OWNER:GROUP"
stat_is() {
	local got
	got=$(in_root stat -c '%a %U:%G' "$1") || die "$1 is missing"
	[[ $got == "$2" ]] || die "$1 is $got, expected $2"
}
absent() {
	[[ ! -e $R$1 && ! -L $R$1 ]] || die "$1 should be gone"
}
present() {
	[[ -e $R$1 ]] || die "$1 should be there"
}

# new_root NAME: a fresh overlay of / at $scratch/NAME, with its own /proc,
# /dev, /run (empty, so no /run/systemd/system) and /tmp.
new_root() {
	local base=$scratch/$1
	mkdir -p "$base/upper" "$base/work" "$base/root"
	mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
	mount -t proc proc "$base/root/proc"
	mount --rbind /dev "$base/root/dev"
	mount -t tmpfs tmpfs "$base/root/run"
	mount -t tmpfs tmpfs "$base/root/tmp"
	R=$base/root
}

# The configuration the install tests use: one account with its password
# in a systemd credential, one with an inline password (allowed because the
# file is popspool:root 0600) pointing at a closed local port.
SAMPLE_CONFIG='[global]
poll_interval = 1h
min_free_space = 0

[account sales]
host = pop.example.com
user = sales@example.com
password_file = ${CREDENTIALS_DIRECTORY}/sales.password

[account lab]
host = 127.0.0.1
port = 9
user = lab
password = lab-inline-secret
'
CREDS=/run/credentials/popspool.service

# same_as_sample PATH: the file holds exactly SAMPLE_CONFIG.
same_as_sample() {
	printf '%s' "$SAMPLE_CONFIG" | cmp -s - "$R$1"
}

# The installed binary, as the service user, with the credentials directory
# systemd would give it.
as_service() {
	in_root runuser -u popspool -- env CREDENTIALS_DIRECTORY=$CREDS popspool "$@"
}

check_units() {
	local unit out score
	for unit in popspool.service popspool@example.service; do
		# verify also runs `man` on Documentation= and checks ExecStart= is executable.
		out=$(in_root systemd-analyze verify "$unit" 2>&1) || die "systemd-analyze verify $unit: $out"
		[[ -z $out ]] || die "systemd-analyze verify $unit warns: $out"
		out=$(in_root systemd-analyze security --offline=yes "$unit" 2>&1) || true
		score=$(sed -n 's/.*Overall exposure level for [^ ]*: \([0-9.]*\).*/\1/p' <<<"$out")
		[[ -n $score ]] || die "no exposure level from systemd-analyze security $unit: $out"
		awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s <= max) }' ||
			die "$unit: exposure $score is above $MAX_EXPOSURE"
		say "systemd-analyze security $unit: exposure $score"
	done
}

# What a spool consumer, a user in group popspool as the README says, can
# read: the spool, and nothing secret. Needs the deb root after a poll of
# the sample configuration's lab account.
consumer_tests() {
	local out rc
	in_root getent passwd reader >/dev/null || in_root useradd -r -G popspool -s /bin/sh reader
	as_reader() { in_root runuser -u reader -- "$@"; }
	as_reader ls /var/spool/popspool/lab/new >/dev/null || die "a consumer cannot list the spool's new/"
	for f in /etc/popspool/popspool.ini /var/lib/popspool/lab.status.json /var/lib/popspool/popspool.prom; do
		if as_reader cat "$f" >/dev/null 2>&1; then die "a consumer can read $f"; fi
	done
	rc=0
	out=$(as_reader popspool --check 2>&1) || rc=$?
	[[ $rc == 66 ]] || die "--check as a consumer exited $rc: $out"
	# A password file the old rule let through (0640, group popspool) is
	# named in a warning, with the consumer; one in /etc/popspool, which
	# consumers cannot enter, is not.
	mkdir -p "$R/srv/popspool"
	for f in /srv/popspool/shared.password /etc/popspool/inside.password; do
		echo "group-secret" >"$R$f"
		in_root chown root:popspool "$f"
		chmod 0640 "$R$f"
	done
	chmod 0755 "$R/srv/popspool"
	printf '[global]\nmin_free_space = 0\n[account a]\nhost = h\nuser = u\npassword_file = /srv/popspool/shared.password\n[account b]\nhost = h\nuser = u\npassword_file = /etc/popspool/inside.password\n' \
		>"$R/tmp/warn.ini"
	in_root chown popspool "/tmp/warn.ini"
	chmod 0600 "$R/tmp/warn.ini"
	out=$(as_service -c /tmp/warn.ini --check 2>&1) || die "--check with group-readable password files: $out"
	contains "$out" "/srv/popspool/shared.password holds a password and is readable by group popspool, which has other members (reader)" "--check warning"
	lacks "$out" "inside.password holds" "--check warning"
	lacks "$out" "group-secret" "--check output"
	lacks "$out" "can be entered by group" "--check warning with the state directory 0700"
	# A state directory the group can enter (what older units' StateDirectoryMode=0750 made) is named too.
	chmod 0750 "$R/var/lib/popspool"
	out=$(as_service -c /tmp/warn.ini --check 2>&1) || die "--check with the state directory 0750: $out"
	contains "$out" "state_dir /var/lib/popspool can be entered by group popspool, which has other members (reader)" "--check warning"
	chmod 0700 "$R/var/lib/popspool"
	rm -rf "$R/srv/popspool" "$R/etc/popspool/inside.password" "$R/tmp/warn.ini"
}

deb_install_tests() {
	local deb=$1 upgrade=$2 out
	new_root deb
	cp "$deb" "$R/tmp/popspool.deb"
	cp "$upgrade" "$R/tmp/popspool-upgrade.deb"

	say "deb: install"
	in_root dpkg -i /tmp/popspool.deb </dev/null
	[[ $(in_root dpkg-query -W -f='${db:Status-Abbrev}' popspool) == "ii " ]] || die "popspool is not installed"
	out=$(in_root dpkg-query -W -f='${Conffiles}' popspool)
	contains "$out" "/etc/popspool/popspool.ini $(md5sum <etc/popspool.ini | cut -d' ' -f1)" "conffiles"

	out=$(in_root getent passwd popspool) || die "no popspool user"
	contains "$out" ":/var/lib/popspool:/usr/sbin/nologin" "popspool user"
	(($(cut -d: -f3 <<<"$out") < 1000)) || die "popspool is not a system user: $out"
	in_root getent group popspool >/dev/null || die "no popspool group"

	stat_is /usr/bin/popspool "755 root:root"
	stat_is /etc/popspool "700 popspool:root"
	stat_is /etc/popspool/popspool.ini "600 popspool:root"
	stat_is /var/spool/popspool "750 popspool:popspool"
	stat_is /var/lib/popspool "700 popspool:popspool"
	for f in /usr/lib/systemd/system/popspool.service /usr/lib/systemd/system/popspool@.service \
		/usr/lib/sysusers.d/popspool.conf /usr/lib/tmpfiles.d/popspool.conf \
		/usr/share/man/man8/popspool.8.gz /usr/share/man/man5/popspool.ini.5.gz \
		/usr/share/doc/popspool/README.md /usr/share/doc/popspool/copyright; do
		stat_is "$f" "644 root:root"
	done
	cmp -s etc/popspool.ini "$R/etc/popspool/popspool.ini" || die "installed popspool.ini differs from etc/popspool.ini"
	contains "$(cat "$R/usr/share/doc/popspool/copyright")" "MIT" "copyright"
	# Enabled, so it starts at the next boot; not started (postinst has no start action).
	[[ $(in_root systemctl is-enabled popspool.service) == enabled ]] || die "popspool.service is not enabled"
	[[ $(in_root man -w 5 popspool.ini) == /usr/share/man/man5/popspool.ini.5.gz ]] || die "man popspool.ini"

	check_units

	say "deb: run the installed binary"
	out=$(in_root popspool --version)
	[[ $out == "popspool $version" ]] || die "popspool --version: $out"
	printf '%s' "$SAMPLE_CONFIG" >"$R/etc/popspool/popspool.ini"
	stat_is /etc/popspool/popspool.ini "600 popspool:root"
	mkdir -p "$R$CREDS"
	echo "sales-credential-secret" >"$R$CREDS/sales.password"
	in_root chown -R popspool:popspool "$CREDS"
	chmod 0400 "$R$CREDS/sales.password"
	out=$(as_service --check) || die "popspool --check as user popspool failed: $out"
	contains "$out" "configuration /etc/popspool/popspool.ini: ok" "--check"
	[[ $(grep -c "secret   ok" <<<"$out") == 2 ]] || die "--check did not resolve both secrets: $out"
	lacks "$out" "lab-inline-secret" "--check output"
	lacks "$out" "sales-credential-secret" "--check output"
	# Without the variable, the credential reference is a configuration error (78).
	local rc=0
	out=$(in_root runuser -u popspool -- popspool --check 2>&1) || rc=$?
	[[ $rc == 78 ]] || die "--check without CREDENTIALS_DIRECTORY exited $rc: $out"
	contains "$out" "CREDENTIALS_DIRECTORY" "--check without CREDENTIALS_DIRECTORY"
	# A user outside group popspool cannot read the configuration (66).
	rc=0
	out=$(in_root runuser -u nobody -- popspool --check 2>&1) || rc=$?
	[[ $rc == 66 ]] || die "--check as nobody exited $rc: $out"
	# One poll as the service would run it: the server's port is closed (75),
	# and the state it writes belongs to popspool.
	rc=0
	out=$(as_service --once -a lab 2>&1) || rc=$?
	[[ $rc == 75 ]] || die "--once against a closed port exited $rc: $out"
	stat_is /var/lib/popspool/lab.status.json "644 popspool:popspool"
	present /var/lib/popspool/popspool.prom
	consumer_tests

	say "deb: an upgrade moves an older layout's secrets out of group popspool"
	# What older packages made: root:popspool 0750 and 0640, state 0750.
	for entry in "0750 /etc/popspool" "0640 /etc/popspool/popspool.ini"; do
		in_root dpkg-statoverride --remove "${entry#* }" >/dev/null
		in_root dpkg-statoverride --update --add root popspool $entry
	done
	chmod 0750 "$R/var/lib/popspool"
	stat_is /etc/popspool/popspool.ini "640 root:popspool"

	say "deb: upgrade keeps the changed configuration"
	out=$(in_root dpkg -i /tmp/popspool-upgrade.deb </dev/null 2>&1) || die "upgrade: $out"
	contains "$out" "can no longer read the configuration" "upgrade message"
	# Said once: a second upgrade over the new layout is silent about it.
	out=$(in_root dpkg -i /tmp/popspool-upgrade.deb </dev/null 2>&1) || die "reinstall: $out"
	lacks "$out" "can no longer read" "second upgrade"
	[[ $(in_root dpkg-query -W -f='${Version}' popspool) == "$version-2" ]] || die "upgrade did not happen"
	same_as_sample /etc/popspool/popspool.ini || die "upgrade replaced the changed popspool.ini"
	absent /etc/popspool/popspool.ini.dpkg-new
	stat_is /etc/popspool "700 popspool:root"
	stat_is /etc/popspool/popspool.ini "600 popspool:root"
	stat_is /var/lib/popspool "700 popspool:popspool"
	consumer_tests
	[[ $(in_root systemctl is-enabled popspool.service) == enabled ]] || die "not enabled after upgrade"

	say "deb: remove keeps configuration and data"
	in_root dpkg -r popspool </dev/null
	[[ $(in_root dpkg-query -W -f='${db:Status-Abbrev}' popspool) == "rc " ]] || die "not in config-files state after remove"
	absent /usr/bin/popspool
	absent /usr/lib/systemd/system/popspool.service
	same_as_sample /etc/popspool/popspool.ini || die "remove changed popspool.ini"
	present /var/lib/popspool/lab.status.json
	present /var/spool/popspool
	in_root getent passwd popspool >/dev/null || die "remove deleted the popspool user"

	say "deb: purge drops configuration and data"
	in_root dpkg -P popspool </dev/null
	out=$(in_root dpkg-query -W -f='${db:Status-Abbrev}' popspool 2>/dev/null) || true
	[[ -z $out || $out == "un " ]] || die "dpkg still has popspool as '$out' after purge"
	absent /etc/popspool/popspool.ini
	absent /var/lib/popspool
	absent /var/spool/popspool
	absent /etc/systemd/system/multi-user.target.wants/popspool.service
	out=$(in_root dpkg-statoverride --list)
	lacks "$out" "/etc/popspool" "dpkg-statoverride after purge"
}

rpm_install_tests() {
	local rpmfile=$1 out
	new_root rpm
	cp "$rpmfile" "$R/tmp/popspool.rpm"

	# Debian's rpm database knows none of the requirements (libc, systemd...):
	# --nodeps; the scriptlets run for real.
	say "rpm: install"
	in_root rpm -i --nodeps /tmp/popspool.rpm 2>&1 | grep -v "use Alien\|assuming you know" || true
	in_root rpm -q popspool >/dev/null || die "rpm did not install popspool"
	out=$(in_root getent passwd popspool) || die "rpm %pre made no popspool user"
	contains "$out" ":/var/lib/popspool:/usr/sbin/nologin" "popspool user (rpm)"
	stat_is /usr/bin/popspool "755 root:root"
	stat_is /etc/popspool "700 popspool:root"
	stat_is /etc/popspool/popspool.ini "600 popspool:root"
	stat_is /var/spool/popspool "750 popspool:popspool"
	stat_is /var/lib/popspool "700 popspool:popspool"
	[[ $(in_root systemctl is-enabled popspool.service) == enabled ]] || die "rpm: popspool.service is not enabled"
	# Digests, modes and owners of every file as the package says.
	out=$(in_root rpm -V --nodeps popspool) || die "rpm -V: $out"
	[[ $(in_root popspool --version) == "popspool $version" ]] || die "rpm: popspool --version"

	say "rpm: upgrade keeps the changed configuration and moves an older layout's secrets, erase saves it"
	printf '%s' "$SAMPLE_CONFIG" >"$R/etc/popspool/popspool.ini"
	# What older packages made: root:popspool 0750 and 0640, state 0750.
	in_root chown root:popspool /etc/popspool /etc/popspool/popspool.ini
	chmod 0750 "$R/etc/popspool" "$R/var/lib/popspool"
	chmod 0640 "$R/etc/popspool/popspool.ini"
	out=$(in_root rpm -U --replacepkgs --nodeps /tmp/popspool.rpm 2>&1 | grep -v "use Alien\|assuming you know" || true)
	contains "$out" "can no longer read the configuration" "rpm upgrade message"
	same_as_sample /etc/popspool/popspool.ini || die "rpm -U replaced the changed popspool.ini"
	stat_is /etc/popspool "700 popspool:root"
	stat_is /etc/popspool/popspool.ini "600 popspool:root"
	stat_is /var/lib/popspool "700 popspool:popspool"
	in_root rpm -e --nodeps popspool 2>&1 | grep -v "use Alien\|assuming you know\|saved as" || true
	absent /usr/bin/popspool
	same_as_sample /etc/popspool/popspool.ini.rpmsave || die "rpm -e did not keep popspool.ini.rpmsave"
	present /var/lib/popspool
	present /var/spool/popspool
	absent /etc/systemd/system/multi-user.target.wants/popspool.service
}

# The .deb installed in a root that boots: systemd-nspawn runs this
# machine's own systemd as a container's PID 1, which starts popspool.service
# with its sandbox, its credential and a watchdog. The account's port is
# closed, so nothing leaves the machine; the point is the unit itself.
boot_tests() {
	local deb=$1 base=$scratch/boot out
	container_pid=
	mkdir -p "$base/upper" "$base/work" "$base/root"
	mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
	R=$base/root
	mount -t proc proc "$R/proc"
	mount --rbind /dev "$R/dev"
	mount -t tmpfs tmpfs "$R/run"
	mount -t tmpfs tmpfs "$R/tmp"
	cp "$deb" "$R/tmp/popspool.deb"
	in_root dpkg -i /tmp/popspool.deb </dev/null >/dev/null
	umount "$R/tmp" "$R/run"
	umount -R "$R/dev"
	umount "$R/proc"
	# Only popspool among this machine's enabled services.
	find "$R/etc/systemd/system/multi-user.target.wants" -mindepth 1 ! -name popspool.service -delete
	printf '[global]\npoll_interval = 1h\n\n[account lab]\nhost = 127.0.0.1\nport = 9\nuser = lab\npassword_file = ${CREDENTIALS_DIRECTORY}/lab.password\n' \
		>"$R/etc/popspool/popspool.ini"
	install -m 0600 /dev/null "$R/etc/popspool/lab.password"
	echo "lab-credential" >"$R/etc/popspool/lab.password"
	mkdir -p "$R/etc/systemd/system/popspool.service.d"
	printf '[Service]\nLoadCredential=lab.password:/etc/popspool/lab.password\nWatchdogSec=4s\n' \
		>"$R/etc/systemd/system/popspool.service.d/test.conf"

	say "boot: systemd-nspawn starts popspool.service"
	systemd-nspawn -D "$R" --boot --register=no --keep-unit --link-journal=no \
		--machine="popspool-test-$$" --console=pipe </dev/null >"$base/nspawn.log" 2>&1 &
	local nspawn=$! deadline=$((SECONDS + 60))
	# Whatever happens below, the container does not outlive the test:
	# killing its PID 1 ends every process in it, and then nspawn.
	trap 'kill -KILL ${container_pid:-'"$nspawn"'} 2>/dev/null || true; wait '"$nspawn"' 2>/dev/null || true' EXIT
	# The container's PID 1 is nspawn's child.
	while [[ -z $container_pid ]]; do
		((SECONDS < deadline)) || die "no container init: $(cat "$base/nspawn.log")"
		container_pid=$(pgrep -P "$nspawn" -x systemd || true)
		sleep 0.2
	done
	container() { nsenter -t "$container_pid" -a "$@"; }
	# Active means READY=1 arrived (Type=notify); the status line means a poll ran.
	until [[ $(container systemctl show popspool -p StatusText --value 2>/dev/null) == *"last poll"* ]]; do
		((SECONDS < deadline)) || die "popspool.service did not get going: $(container systemctl status popspool --no-pager 2>&1)"
		sleep 0.5
	done
	[[ $(container systemctl is-active popspool) == active ]] || die "popspool.service is not active"
	# The limits systemd applied, as the running service has them.
	out=$(container systemctl show popspool -p LimitCORE -p MemoryHigh -p MemoryMax -p TasksMax)
	for p in LimitCORE=0 MemoryHigh=268435456 MemoryMax=536870912 TasksMax=32; do
		grep -qxF "$p" <<<"$out" || die "popspool.service does not have $p: $out"
	done
	# StateDirectoryMode=: systemd sets it at every start, so it must say 0700.
	out=$(container stat -c %a /var/lib/popspool)
	[[ $out == 700 ]] || die "the running service's /var/lib/popspool is $out, expected 700"
	out=$(container sh -c 'grep "^Max core file size" /proc/$(systemctl show popspool -p MainPID --value)/limits')
	[[ $(awk '{print $5, $6}' <<<"$out") == "0 0" ]] || die "popspool's core limit: $out"
	out=$(container systemctl show popspool -p StatusText --value)
	contains "$out" "1 account(s) (1 failing), last poll" "STATUS= line"
	contains "$out" "lab failed: cannot connect to 127.0.0.1:9 (last tried 127.0.0.1:9): Connection refused" "STATUS= line"
	container systemctl reload popspool
	# Longer than WatchdogSec: only the pings keep it alive.
	sleep 6
	[[ $(container systemctl show popspool -p NRestarts --value) == 0 ]] ||
		die "popspool.service was restarted (watchdog?): $(container journalctl -u popspool --no-pager 2>&1)"
	out=$(container journalctl -u popspool --no-pager)
	contains "$out" "SIGHUP: configuration reloaded" "journal after systemctl reload"
	# The credential was read: the poll failed at the connection, not the password.
	lacks "$out" "password file" "journal"
	container systemctl stop popspool
	[[ $(container systemctl show popspool -p Result --value) == success ]] || die "stop: $(container systemctl status popspool --no-pager 2>&1)"
	container systemctl poweroff || true
	while kill -0 "$nspawn" 2>/dev/null; do
		((SECONDS < deadline + 30)) || die "the container did not power off"
		sleep 0.2
	done
	say "boot: ready, status, watchdog, reload, credential and stop work under systemd"
}

# --- main -------------------------------------------------------------------

if [[ ${1:-} == --tools ]]; then
	install_tools
	exit 0
fi

if [[ ${1:-} == --in-namespace ]]; then
	scratch=$2 version=$3
	deb_install_tests "$4" "$5"
	rpm_install_tests "$6"
	boot_tests "$4"
	exit 0
fi

[[ $(id -u) == 0 ]] || die "run as root (apt-get, chroot and mount)"
install_tools

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
deb_arch=$(dpkg --print-architecture)
rpm_arch=$(uname -m)
# A target dir of its own: `cargo test` may hold the lock on target/, and a
# developer's target/release stays as they left it.
export CARGO_TARGET_DIR=${POPSPOOL_PACKAGING_TARGET_DIR:-$top/target/packaging}
out_dir=$CARGO_TARGET_DIR/packages
rm -rf "$out_dir"
mkdir -p "$out_dir"

say "static checks"
# The template unit shares the single unit's sandbox line for line.
diff <(sed -n '/^# Sandbox\./,$p' packaging/popspool.service) \
	<(sed -n '/^# Sandbox\./,$p' packaging/popspool@.service) ||
	die "the [Service] sandbox of popspool@.service differs from popspool.service"
for unit in packaging/popspool.service packaging/popspool@.service; do
	for line in "${REQUIRED_UNIT_LINES[@]}"; do
		grep -qxF "$line" "$unit" || die "$unit lacks the line $line"
	done
done
# The rpm's %pre creates the same user as sysusers.d does on Debian.
sysusers_line=$(grep -v '^#' packaging/popspool.sysusers)
grep -qxF "$sysusers_line" packaging/rpm/pre-install.sh ||
	die "packaging/rpm/pre-install.sh does not carry packaging/popspool.sysusers' line: $sysusers_line"
for s in packaging/debian/* packaging/rpm/*.sh packaging/test-packages.sh; do
	sh -n "$s" 2>/dev/null || bash -n "$s" || die "$s: syntax error"
done

say "building the .deb"
cargo deb --locked --output "$out_dir/"
deb=$out_dir/popspool_${version}-1_${deb_arch}.deb
[[ -f $deb ]] || die "no $deb"
# The same build as an upgrade, to exercise the upgrade path.
cargo deb --locked --no-build --deb-version "$version-2" --output "$out_dir/upgrade.deb"

say "building the .rpm"
cargo generate-rpm --output "$out_dir/"
rpmfile=$out_dir/popspool-${version}-1.${rpm_arch}.rpm
[[ -f $rpmfile ]] || die "no $rpmfile"

say "inspecting the .deb"
info=$(dpkg-deb -f "$deb" Package Version Architecture Depends)
contains "$info" "Version: $version-1" ".deb control"
for dep in "libc6" "libssl3" "ca-certificates" "systemd | systemd-sysusers" "systemd | systemd-tmpfiles"; do
	contains "$info" "$dep" ".deb Depends"
done
ctl=$(mktemp -d)
dpkg-deb --control "$deb" "$ctl"
[[ $(cat "$ctl/conffiles") == /etc/popspool/popspool.ini ]] || die "conffiles: $(cat "$ctl/conffiles")"
contains "$(cat "$ctl/postinst")" "systemd-sysusers" "postinst"
contains "$(cat "$ctl/postinst")" "deb-systemd-helper enable popspool.service" "postinst"
contains "$(cat "$ctl/postinst")" "statoverride /etc/popspool/popspool.ini popspool root 0600" "postinst"
lacks "$(cat "$ctl/postinst")" "deb-systemd-invoke start" "postinst (enable, never start)"
contains "$(cat "$ctl/prerm")" "deb-systemd-invoke stop popspool.service" "prerm"
contains "$(cat "$ctl/postrm")" 'if [ "$1" = purge ]' "postrm"
lacks "$(cat "$ctl/postinst")" "#DEBHELPER#" "postinst"
rm -rf "$ctl"

say "inspecting the .rpm"
files=$(rpm -qlp "$rpmfile" 2>/dev/null)
for f in /usr/bin/popspool /etc/popspool/popspool.ini \
	/usr/lib/systemd/system/popspool.service /usr/lib/systemd/system/popspool@.service \
	/usr/lib/sysusers.d/popspool.conf /usr/lib/tmpfiles.d/popspool.conf \
	/usr/share/man/man8/popspool.8 /usr/share/man/man5/popspool.ini.5 \
	/usr/share/doc/popspool/README.md /usr/share/licenses/popspool/LICENSE; do
	grep -qxF "$f" <<<"$files" || die ".rpm lacks $f"
done
attrs=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' "$rpmfile" 2>/dev/null)
grep -qxF "cn -rw------- popspool:root /etc/popspool/popspool.ini" <<<"$attrs" ||
	die "popspool.ini is not %config(noreplace) 0600 popspool:root: $attrs"
grep -qxF " -rwxr-xr-x root:root /usr/bin/popspool" <<<"$attrs" || die "/usr/bin/popspool attributes: $attrs"
scripts=$(rpm -qp --scripts "$rpmfile" 2>/dev/null)
for s in "preinstall scriptlet" "postinstall scriptlet" "preuninstall scriptlet" "postuninstall scriptlet" \
	"systemd-sysusers --replace=/usr/lib/sysusers.d/popspool.conf" "systemctl --no-reload enable popspool.service" \
	"systemctl try-restart popspool.service"; do
	contains "$scripts" "$s" ".rpm scripts"
done
lacks "$scripts" "systemctl start" ".rpm scripts (enable, never start)"
requires=$(rpm -qp --requires "$rpmfile" 2>/dev/null)
for r in "libssl.so.3()(64bit)" ca-certificates systemd; do
	grep -qxF "$r" <<<"$requires" || die ".rpm does not require $r: $requires"
done

say "installing into scratch roots"
scratch=$(mktemp -d /tmp/popspool-packages.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
unshare --mount --propagation private \
	bash "$0" --in-namespace "$scratch" "$version" "$deb" "$out_dir/upgrade.deb" "$rpmfile"

say "sizes: $(stat -c '%n %s bytes' "$deb" "$rpmfile" | sed "s|$out_dir/||" | paste -sd, -)"
say "ok"
