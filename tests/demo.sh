#!/usr/bin/env bash
# popspool end to end on this machine: installs Dovecot and the build's
# dependencies (tests/deps.sh --core: apt packages only), starts a private
# Dovecot on free loopback ports with its own CA and a sample mailbox, builds
# popspool, drains the mailbox over POP3S into a spool, and shows the spool.
# Everything lives under DEMO_DIR (default /tmp/popspool-demo); the Dovecot
# is stopped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-/tmp/popspool-demo}

bash tests/deps.sh --core
echo "== building popspool"
cargo build --release --locked --quiet
# Where cargo put it: CARGO_TARGET_DIR, if set, moves target/.
BIN=$(realpath "${CARGO_TARGET_DIR:-target}")/release/popspool

bash tests/dovecot/dovecot.sh stop "$DEMO_DIR/dovecot" 2>/dev/null || true
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR/samples"
trap 'bash tests/dovecot/dovecot.sh stop "$DEMO_DIR/dovecot" >/dev/null 2>&1 || true' EXIT

echo "== starting a private Dovecot"
bash tests/dovecot/dovecot.sh start "$DEMO_DIR/dovecot" >/dev/null
# shellcheck disable=SC1091
. "$DEMO_DIR/dovecot/ports.env"
bash tests/dovecot/dovecot.sh adduser "$DEMO_DIR/dovecot" sales 'demo;pass#word'

echo "== filling the mailbox of 'sales' with 3 sample messages"
cat > "$DEMO_DIR/samples/1.eml" <<'EOF'
From: Alice Buyer <alice@example.org>
To: sales@example.com
Subject: Order 4711
Message-ID: <order-4711@example.org>
Date: Sat, 21 Nov 2026 09:15:00 +0100
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Please send 12 boxes of widgets.
EOF
cat > "$DEMO_DIR/samples/2.eml" <<'EOF'
From: =?UTF-8?Q?Bj=C3=B6rn?= <bjorn@example.org>
To: sales@example.com
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_und_Rechnung?=
Message-ID: <invoice-17@example.org>
Date: Sat, 21 Nov 2026 10:30:00 +0100
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Gr=FC=DFe, die Rechnung ist angeh=E4ngt.
--b1
Content-Type: application/pdf
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="invoice-17.pdf"

JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK
--b1--
EOF
cat > "$DEMO_DIR/samples/3.eml" <<'EOF'
From: Carol <carol@example.org>
To: sales@example.com
Subject: A line that starts with a dot
Message-ID: <dots@example.org>
Date: Sat, 21 Nov 2026 11:00:00 +0100

.this line starts with a dot, which POP3 must stuff and unstuff
.
EOF
bash tests/dovecot/dovecot.sh deliver "$DEMO_DIR/dovecot" sales "$DEMO_DIR"/samples/*.eml

cat > "$DEMO_DIR/popspool.ini" <<EOF
[global]
spool = $DEMO_DIR/spool
state_dir = $DEMO_DIR/state

[account sales]
host = localhost
port = $POP3S_PORT
tls = implicit
ca_file = $DEMO_DIR/dovecot/ca.pem
user = sales
password = demo;pass#word
EOF
chmod 600 "$DEMO_DIR/popspool.ini"

echo "== popspool --check"
"$BIN" -c "$DEMO_DIR/popspool.ini" --check
echo "== popspool --once"
"$BIN" -c "$DEMO_DIR/popspool.ini" --once
echo "== the spool"
find "$DEMO_DIR/spool" | sort
first=$(find "$DEMO_DIR/spool/sales/new" -mindepth 1 -maxdepth 1 | sort | sed -n 2p)
echo "== $first/meta.json"
cat "$first/meta.json"
echo "== messages left on the server: $(bash tests/dovecot/dovecot.sh count "$DEMO_DIR/dovecot" sales)"
