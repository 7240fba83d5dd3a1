#!/usr/bin/env bash
# Installs what popspool's test suite needs on Debian 12, as root. Idempotent:
# does nothing (not even `apt-get update`) when everything is installed.
set -euo pipefail

# cargo-deb, cargo-generate-rpm, rpm and systemd-analyze for tests/packaging.rs.
# The cargo tools compile from crates.io once (about 6 minutes on 2 cores):
# here, rather than inside the time of a test.
bash "$(dirname "$0")/../packaging/test-packages.sh" --tools

pkgs=(dovecot-core dovecot-pop3d openssl python3 ca-certificates libssl-dev pkg-config)

missing=()
for p in "${pkgs[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[[ $status == installed ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
	echo "deps.sh: all installed: ${pkgs[*]}"
	exit 0
fi

[[ $(id -u) == 0 ]] || {
	echo "deps.sh: run as root to install: ${missing[*]}" >&2
	exit 1
}
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The tests run private servers; keep the package from starting a system-wide
# Dovecot on *:110/995 (Debian's policy-rc.d protocol: 101 = do not start).
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 0755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update
# Only the missing ones: naming an installed package would upgrade it.
apt-get install -y --no-install-recommends "${missing[@]}"
