#!/usr/bin/env bash
# Scenario b of the benchmark (10,000 x 4 KiB over POP3S into a spool on the
# real disk) with popspool run the way the package runs it: as a systemd
# service with every sandbox and limit property of packaging/popspool.service,
# side by side with mpop run plainly, in one run. README "Performance"
# reports the row.
#
#   bash tests/bench/sandboxed.sh [--runs N] [--msgs N] [--popspool BIN]
#
# This machine's systemd need not be running: systemd-nspawn boots it as the
# PID 1 of a container whose root is an overlay of this one (as
# packaging/test-packages.sh does), sharing the host's network, so the
# benchmark's private Dovecot on 127.0.0.1 is reachable. Each popspool run is
# `systemd-run --pipe` in that container with the unit's properties, read
# from the unit file itself so the two cannot drift apart; GNU time inside
# the service reports popspool's own CPU time and peak RSS (bench.py reads
# them from time.inner). Differences from the packaged service, none of
# which changes how the spool is written: it runs as root (without
# capabilities) instead of user popspool, so the benchmark's files need no
# chown; ReadWritePaths names the benchmark's directories; no StateDirectory.
#
# Needs root. Installs systemd-container (nspawn) when missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
unit=$repo/packaging/popspool.service

runs=3
msgs=10000
popspool=
while [[ $# -gt 0 ]]; do
	case $1 in
	--runs) runs=$2; shift ;;
	--msgs) msgs=$2; shift ;;
	--popspool) popspool=$2; shift ;;
	-h | --help)
		sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) echo "sandboxed.sh: unknown argument $1" >&2; exit 64 ;;
	esac
	shift
done

die() {
	echo "sandboxed.sh: $*" >&2
	exit 1
}
[[ $(id -u) == 0 ]] || die "must run as root (nspawn, private Dovecot)"

bash "$repo/tests/deps.sh" --core >&2
command -v systemd-nspawn >/dev/null || {
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd-container >&2
}
command -v mpop >/dev/null || {
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mpop >&2
}
[[ -x /usr/bin/time ]] || {
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends time >&2
}

if [[ -z $popspool ]]; then
	(cd "$repo" && cargo build --release --locked >&2)
	popspool=$(cd "$repo" && realpath "${CARGO_TARGET_DIR:-target}")/release/popspool
fi
popspool=$(realpath "$popspool")
[[ -x $popspool ]] || die "no popspool binary at $popspool"

# Not under /tmp or /var/tmp: the unit's PrivateTmp hides both from the
# service. Short: Dovecot's unix sockets live in the work directory.
work=$(mktemp -d /var/lib/psb.XXXXXX)
disk=$(mktemp -d /var/lib/psb-disk.XXXXXX)
chmod 0755 "$work" "$disk"
root=$(mktemp -d /var/lib/psb-root.XXXXXX)
mkdir -p "$root/upper" "$root/work" "$root/root"

nspawn= container_pid=
cleanup() {
	[[ -n $container_pid ]] && kill -KILL "$container_pid" 2>/dev/null || true
	[[ -n $nspawn ]] && wait "$nspawn" 2>/dev/null || true
	umount "$root/root" 2>/dev/null || true
	rm -rf -- "$work" "$disk" "$root"
}
trap cleanup EXIT

mount -t overlay overlay -o "lowerdir=/,upperdir=$root/upper,workdir=$root/work" "$root/root"
# Nothing but systemd itself in the container: no enabled services.
find "$root/root/etc/systemd/system" -path '*.wants/*' -delete 2>/dev/null || true
systemd-nspawn -D "$root/root" --boot --register=no --keep-unit --link-journal=no \
	--machine="popspool-bench-$$" --console=pipe \
	--bind="$work" --bind="$disk" --bind-ro="$(dirname "$popspool")" \
	</dev/null >"$root/nspawn.log" 2>&1 &
nspawn=$!
deadline=$((SECONDS + 60))
while [[ -z $container_pid ]]; do
	((SECONDS < deadline)) || die "no container init: $(cat "$root/nspawn.log")"
	container_pid=$(pgrep -P "$nspawn" -x systemd || true)
	sleep 0.2
done
until nsenter -t "$container_pid" -a systemctl is-system-running --wait >/dev/null 2>&1 ||
	[[ $(nsenter -t "$container_pid" -a systemctl is-system-running 2>/dev/null) == degraded ]]; do
	((SECONDS < deadline)) || die "the container's systemd did not start"
	sleep 0.5
done

# The unit's [Service] properties, minus those that name the packaged
# service's files, user or life cycle.
props=()
while IFS= read -r line; do
	props+=(-p "$line")
done < <(awk '
	/^\[/ { service = ($0 == "[Service]") ; next }
	service && /^[A-Za-z]+=/ {
		key = substr($0, 1, index($0, "=") - 1)
		if (key ~ /^(Type|ExecStart|ExecReload|Restart|RestartSec|RestartPreventExitStatus|TimeoutStopSec|User|Group|StateDirectory|StateDirectoryMode|ReadWritePaths|WatchdogSec)$/) next
		print
	}' "$unit")
nprops=$((${#props[@]} / 2))
((nprops > 20)) || die "read only $nprops properties from $unit"

wrapper=$work/popspool-in-unit
{
	echo '#!/bin/sh'
	echo '# popspool as a transient service with popspool.service'"'"'s sandbox (sandboxed.sh).'
	printf 'exec nsenter -t %s -a systemd-run --quiet --pipe --collect' "$container_pid"
	printf ' %q' "${props[@]}" -p "ReadWritePaths=$work $disk"
	printf ' -p WorkingDirectory="$PWD" /usr/bin/time -o "$PWD/time.inner" -f "%%U %%S %%M" %q "$@"\n' "$popspool"
} >"$wrapper"
chmod 0755 "$wrapper"

# The sandbox really applies: /proc/sys is hidden (ProcSubset=pid), and
# the kernel release is still known (uname(2)), so the batch is made
# durable with one syncfs.
probe=$(nsenter -t "$container_pid" -a systemd-run --quiet --pipe --collect "${props[@]}" \
	/bin/sh -c 'test -e /proc/sys/kernel/osrelease && echo visible || echo hidden')
[[ $probe == hidden ]] || die "the sandbox did not hide /proc/sys (got: $probe)"
echo "sandboxed.sh: $nprops properties of $unit applied; /proc/sys hidden" >&2

/usr/bin/python3 "$here/bench.py" --popspool "$wrapper" --workdir "$work" --disk-dir "$disk" \
	--scenarios b --clients popspool,mpop --runs "$runs" --msgs "$msgs" --tmpfs-size 64m
