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
# The rest of the suite: /bin/kill for the signal tests, and mpop, which the
# benchmark's quick run (tests/suite/bench_quick.rs) compares popspool with.
suite=(procps mpop)

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
	echo "deps.sh: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# The tests run private servers; keep the package from starting a system-wide
	# Dovecot on *:110/995 (Debian's policy-rc.d protocol: 101 = do not start).
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
fi

# cargo-deb, cargo-generate-rpm, rpm, systemd-analyze and systemd-nspawn for
# the packaging test (tests/suite/packaging.rs). The cargo tools compile from
# crates.io once (several minutes on 2 cores): here, rather than inside the
# time of a test, and not for the demo.
if ((full)); then
	bash packaging/test-packages.sh --tools
fi
