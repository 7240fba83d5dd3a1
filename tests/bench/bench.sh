#!/usr/bin/env bash
# popspool benchmark: popspool against mpop, fetchmail and getmail6 on a
# private Dovecot (mail on tmpfs); README "Performance" reports its figures.
# Prints one table.
#
#   bash tests/bench/bench.sh [--quick] [--runs N] [--scenarios abcdef]
#                             [--clients popspool,mpop,fetchmail,getmail]
#                             [--no-build] [--popspool BIN] [--json FILE]
#                             [any option of bench.py, see --help]
#
# Scenarios: a 10,000 x 4 KiB over POP3S, output on tmpfs; b the same with
# the output on the real disk; c 300 messages through a loopback relay adding
# 25 ms each way; d one 51 MiB message (38 MiB attachment); e the daemon's
# memory over 10,000 polls of an empty mailbox (SIGUSR1-driven); f 200
# accounts in one configuration, 4 of them dead or stalled.
#
# --quick: a correctness run of the harness itself (popspool, plus mpop when
# it is installed or installs), small sizes, one run each; the test suite
# runs this (tests/suite/bench_quick.rs). No timing is asserted anywhere.
#
# Needs root (private Dovecot, tmpfs mounts) on Debian 12. Installs mpop,
# fetchmail, getmail6 and safecat (fetchmail's Maildir MDA) when missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)

quick=0
build=1
popspool=""
pass=()
while [[ $# -gt 0 ]]; do
	case $1 in
	--quick) quick=1 ;;
	--no-build) build=0 ;;
	--popspool)
		popspool=$2
		shift
		;;
	-h | --help)
		sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) pass+=("$1") ;;
	esac
	shift
done

[[ $(id -u) == 0 ]] || {
	echo "bench.sh: must run as root (private Dovecot, tmpfs mounts)" >&2
	exit 1
}

# Only what is missing is installed; apt-get update only when the package
# lists do not know a package yet.
install_missing() {
	local missing=() p status
	for p in "$@"; do
		status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
		[[ $status == installed ]] || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	echo "bench.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
		apt-get update
	fi
	# fetchmail ships an init script: never start a system-wide daemon.
	local policy=0
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		policy=1
	fi
	local rc=0
	apt-get install -y --no-install-recommends "${missing[@]}" >&2 || rc=$?
	((policy)) && rm -f /usr/sbin/policy-rc.d
	return $rc
}

bash "$repo/tests/deps.sh" --core >&2
py=/usr/bin/python3
[[ -x $py ]] || py=python3

if ((quick)); then
	clients=popspool
	if install_missing mpop; then
		clients=popspool,mpop
	else
		echo "bench.sh: mpop did not install; quick run with popspool only" >&2
	fi
	args=(--runs 1 --scenarios acef --clients "$clients" --msgs 200 --lat-msgs 20
		--polls 30 --accounts 8 --bad-accounts 2 --f-msgs 3 --f-timeout 2 --stall-s 3
		--tmpfs-size 512m)
else
	install_missing mpop fetchmail getmail6 safecat time
	args=()
fi

if [[ -z $popspool ]]; then
	popspool=$(cd "$repo" && realpath "${CARGO_TARGET_DIR:-target}")/release/popspool
	if ((build)); then
		(cd "$repo" && cargo build --release --locked >&2)
	fi
fi
[[ -x $popspool ]] || {
	echo "bench.sh: no popspool binary at $popspool (build it, or --popspool BIN)" >&2
	exit 1
}

# Short paths: Dovecot's unix sockets live under the work directory (108-byte
# limit). The disk directory must be on the real disk (scenario b), so not /tmp
# if that is a tmpfs.
work=$(mktemp -d /tmp/psb.XXXXXX)
disk=$(mktemp -d /var/tmp/popspool-bench-disk.XXXXXX)
# getmail6 runs as nobody (it refuses root) and must reach its directories.
chmod 0755 "$work" "$disk"
cleanup() {
	rm -rf -- "$work" "$disk"
}
trap cleanup EXIT

"$py" "$here/bench.py" --popspool "$popspool" --workdir "$work" --disk-dir "$disk" \
	"${args[@]}" "${pass[@]}"
