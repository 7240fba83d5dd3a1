#!/usr/bin/env bash
# Installs what popspool's demo and test suite need on Debian 12, as root.
# Idempotent: does nothing (not even `apt-get update`) when everything is
# installed.
#
#   bash tests/deps.sh          everything the whole suite needs (tests/run.sh)
#   bash tests/deps.sh --core   only the build and a private Dovecot: what
#                               tests/demo.sh, tests/torture.sh and
#                               tests/bench/bench.sh need; apt packages only
set -euo pipefail
cd "$(dirname "$0")/.."

# Building popspool (openssl-sys finds OpenSSL through pkg-config), the trust
# store, and tests/dovecot/dovecot.sh: Dovecot, the openssl CLI for its CA,
# python3 for its port picking and start-up check.
core=(libssl-dev pkg-config ca-certificates dovecot-core dovecot-pop3d openssl python3)
# The rest of the suite: /bin/kill for the signal tests; mpop, which the
# benchmark's quick run (tests/suite/bench_quick.rs) compares popspool with;
# GNU Mailutils' pop3d, the second real server (tests/mailutils/mailutils.sh);
# GNU time, whose peak RSS the memory tests read (tests/suite/memory.rs).
suite=(procps mpop mailutils-pop3d time)

full=1
case ${1:-} in
--core) full=0 ;;
"") ;;
*)
	echo "usage: bash tests/deps.sh [--core]" >&2
	exit 64
	;;
esac
pkgs=("${core[@]}")
((full)) && pkgs+=("${suite[@]}")

missing=()
for p in "${pkgs[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[[ $status == installed ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
	echo "deps.sh: all installed: ${pkgs[*]}"
else
	[[ $(id -u) == 0 ]] || {
		echo "deps.sh: run as root to install: ${missing[*]}" >&2
		exit 1
	}
	# courier-pop ships a /usr/sbin/pop3d too and conflicts with
	# mailutils-pop3d: apt would remove it. Leave that to a person.
	if [[ " ${missing[*]} " == *" mailutils-pop3d "* && -e /usr/sbin/pop3d ]]; then
		owner=$(dpkg-query -S /usr/sbin/pop3d 2>/dev/null | cut -d: -f1) || true
		if [[ $owner != mailutils-pop3d ]]; then
			echo "deps.sh: /usr/sbin/pop3d is not GNU Mailutils' (package: ${owner:-none}); courier-pop provides one and conflicts with mailutils-pop3d, which the suite needs: remove it first" >&2
			exit 1
		fi
	fi
	echo "deps.sh: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# The tests run private servers; keep the packages from starting a
	# system-wide Dovecot or pop3d on *:110/995 (Debian's policy-rc.d
	# protocol: 101 = do not start; mailutils-pop3d is a systemd unit, not an
	# inetd service, and its postinst starts it through deb-systemd-invoke,
	# which asks policy-rc.d).
	policy=0
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		policy=1
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	apt-get update
	# Only the missing ones: naming an installed package would upgrade it.
	apt-get install -y --no-install-recommends "${missing[@]}"
	if ((policy)); then
		rm -f /usr/sbin/policy-rc.d
		trap - EXIT
	fi
	# Nor at the next boot: the package enables its unit, which would serve
	# the system's users on *:110. Disabled once, here, it stays disabled
	# across upgrades; a pop3d that was installed before is left alone.
	if [[ " ${missing[*]} " == *" mailutils-pop3d "* ]]; then
		systemctl disable mailutils-pop3d.service 2>/dev/null || true
	fi
fi

# cargo-deb, cargo-generate-rpm, rpm, systemd-analyze and systemd-nspawn for
# the packaging test (tests/suite/packaging.rs). The cargo tools compile from
# crates.io once (several minutes on 2 cores): here, rather than inside the
# time of a test, and not for the demo.
if ((full)); then
	bash packaging/test-packages.sh --tools
fi
