#!/usr/bin/env bash
# Run a private Dovecot POP3 server for popspool's tests and demos.
#
#   dovecot.sh start   DIR [--tmpfs] [--watch-pid PID] [--mechanisms "plain login ..."]
#   dovecot.sh adduser DIR USER PASSWORD [--hashed]
#   dovecot.sh deliver DIR USER FILE...
#   dovecot.sh count   DIR USER
#   dovecot.sh stop    DIR
#
# Everything lives under DIR (config, CA, certificates, passwd, mail, logs,
# sockets, pid file); nothing is read from /etc/dovecot. Must run as root:
# Dovecot's master needs it to drop privileges (login: dovenull, auth:
# dovecot, mail access: uid/gid 5000). tests/suite/common/dovecot.rs drives it
# for the Rust tests (one server per test, stopped when the test ends).
set -euo pipefail

readonly MAIL_UID=5000
readonly MAIL_GID=5000
# Dovecot's auth_username_chars default; anything else would be refused at login.
readonly USER_RE='^[A-Za-z0-9._@-]+$'
readonly START_TIMEOUT=10 # seconds until both ports must answer +OK
readonly STOP_TIMEOUT=10  # seconds until the master must be gone

die() {
	echo "dovecot.sh: $*" >&2
	exit 1
}

usage() {
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# Debian's python3 starts in ~30 ms; a pyenv shim first in PATH takes ~150 ms.
python() {
	if [[ -x /usr/bin/python3 ]]; then
		/usr/bin/python3 "$@"
	else
		python3 "$@"
	fi
}

# Absolute, symlink-free path of an existing directory.
absdir() {
	[[ -d $1 ]] || die "no such directory: $1"
	(cd "$1" && pwd -P)
}

# The config below is Dovecot 2.3 syntax (Debian 12); 2.4 renamed most of it.
DOVECOT=$(command -v dovecot || echo /usr/sbin/dovecot)
check_dovecot() {
	local v
	v=$("$DOVECOT" --version 2>/dev/null) ||
		die "dovecot not found: apt-get install dovecot-core dovecot-pop3d (or run tests/deps.sh)"
	[[ $v == 2.3.* ]] || die "needs Dovecot 2.3 (Debian 12), found $v"
	[[ -x /usr/lib/dovecot/pop3 ]] || die "dovecot-pop3d is not installed"
}

need_root() {
	[[ $(id -u) == 0 ]] || die "must run as root (Dovecot's master drops privileges itself)"
}

# The master's pid if it is running for this DIR, else nothing. The pid file
# is trusted only if that process is a dovecot started with DIR's config, so a
# stale pid file can never make us signal an unrelated process.
master_pid() {
	local dir=$1 pid cmdline
	[[ -f $dir/run/master.pid ]] || return 0
	pid=$(<"$dir/run/master.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 0
	[[ $cmdline == *"$dir/dovecot.conf"* ]] || return 0
	echo "$pid"
}

# ---------------------------------------------------------------------------
# start

gen_tls() {
	local dir=$1 cnf=$1/tls/openssl.cnf
	# Reused across a stop/start of the same DIR so the fingerprint stays put.
	if [[ -s $dir/ca.pem && -s $dir/server.pem && -s $dir/server.key &&
		-s $dir/wrong-ca.pem && -s $dir/server.sha256 && -s $dir/client.pem &&
		-s $dir/wrong-client.pem ]]; then
		return 0
	fi
	mkdir -p "$dir/tls"
	cat >"$cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
EOF
	# EC P-256: key generation takes milliseconds (RSA-2048 ~100 ms each).
	local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc -days 3650)
	(
		umask 077
		openssl req -x509 -config "$cnf" -extensions ca_ext "${ec[@]}" \
			-subj "/O=popspool tests/CN=popspool test CA" \
			-keyout "$dir/ca.key" -out "$dir/ca.pem"
		openssl req -x509 -config "$cnf" -extensions ca_ext "${ec[@]}" \
			-subj "/O=popspool tests/CN=popspool WRONG test CA" \
			-keyout "$dir/wrong-ca.key" -out "$dir/wrong-ca.pem"
		openssl req -x509 -config "$cnf" -extensions server_ext "${ec[@]}" \
			-CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
			-subj "/O=popspool tests/CN=localhost" \
			-keyout "$dir/server.key" -out "$dir/server.pem"
		# Client certificates for SASL EXTERNAL: Dovecot takes the login
		# name from the CN (auth_ssl_username_from_cert). The second one is
		# signed by the wrong CA, so Dovecot does not accept it.
		openssl req -x509 -config "$cnf" -extensions client_ext "${ec[@]}" \
			-CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
			-subj "/O=popspool tests/CN=certuser" \
			-keyout "$dir/client.key" -out "$dir/client.pem"
		openssl req -x509 -config "$cnf" -extensions client_ext "${ec[@]}" \
			-CA "$dir/wrong-ca.pem" -CAkey "$dir/wrong-ca.key" \
			-subj "/O=popspool tests/CN=certuser" \
			-keyout "$dir/wrong-client.key" -out "$dir/wrong-client.pem"
	) 2>"$dir/tls/openssl.err" || {
		cat "$dir/tls/openssl.err" >&2
		die "certificate generation failed"
	}
	chmod 0644 "$dir/ca.pem" "$dir/wrong-ca.pem" "$dir/server.pem" "$dir/client.pem" "$dir/wrong-client.pem"
	# SHA-256 of the DER certificate, lowercase hex without colons.
	openssl x509 -in "$dir/server.pem" -outform DER |
		openssl dgst -sha256 -r | cut -d' ' -f1 >"$dir/server.sha256"
}

# Prints two distinct ports free on both listen addresses. The kernel picks
# them (bind to 127.0.0.1:0); all sockets are held open together so the two
# differ. Another process could still take one before Dovecot binds it:
# start retries on "Address already in use".
pick_ports() {
	python - <<'EOF'
import socket
held, ports = [], []
while len(ports) < 2:
    a = socket.socket()
    a.bind(("127.0.0.1", 0))
    held.append(a)
    port = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.2", port))
    except OSError:
        continue
    held.append(b)
    ports.append(port)
print(*ports)
EOF
}

write_conf() {
	local dir=$1 pop3=$2 pop3s=$3 mechanisms=$4
	cat >"$dir/dovecot.conf" <<EOF
# Private Dovecot for popspool tests; generated by tests/dovecot/dovecot.sh.
# Self-contained: no !include, nothing from /etc/dovecot.
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
instance_name = popspool-test-$pop3
protocols = pop3
# 127.0.0.2 is an extra, deliberately "non-local" address: a client connecting
# to it comes from 127.0.0.1, so Dovecot does not count it as secured.
listen = 127.0.0.1, 127.0.0.2
shutdown_clients = yes

ssl = yes
ssl_cert = <$dir/server.pem
ssl_key = <$dir/server.key
ssl_min_protocol = TLSv1.2
ssl_dh = </usr/share/dovecot/dh.pem
# Client certificates (for SASL EXTERNAL) are asked for and checked against
# the test CA, but not required: clients without one work as before.
ssl_ca = <$dir/ca.pem
ssl_verify_client_cert = yes
ssl_require_crl = no
auth_ssl_username_from_cert = yes

# Cleartext USER/PASS, PLAIN and LOGIN only over TLS -- except that Dovecot
# counts a connection from its own IP (127.0.0.1 -> 127.0.0.1) as secured.
disable_plaintext_auth = yes
# Debian's Dovecot 2.3.19 has no built-in NTLM (only winbind's), so NTLM is
# tested against the scripted fake server instead.
auth_mechanisms = $mechanisms
# Default 2 s; failed-login tests would be slow for nothing.
auth_failure_delay = 0
auth_verbose = yes

# One passwd-file per user (same line as in $dir/passwd). Dovecot checks a
# passwd-file for changes at most once per second, so a user appended to a
# single shared file could stay unknown for up to a second; a file it has not
# seen yet is always read fresh.
# EXTERNAL: the verified client certificate is the credential; Dovecot then
# checks an empty password, which this passdb accepts for EXTERNAL only.
passdb {
  driver = static
  args = nopassword=y
  mechanisms = external
}
passdb {
  driver = passwd-file
  args = $dir/passwd.d/%u
}
userdb {
  driver = passwd-file
  args = $dir/passwd.d/%u
}
first_valid_uid = $MAIL_UID
last_valid_uid = $MAIL_UID
first_valid_gid = $MAIL_GID
mail_location = maildir:~/Maildir
# Test data; no reason to pay for fsync.
mail_fsync = never

pop3_uidl_format = %08Xu%08Xv
mail_max_userip_connections = 1000

# ~200 concurrent connections: two long-lived login processes that take many
# clients each, instead of one fork per connection capped at 100.
service pop3-login {
  inet_listener pop3 {
    port = $pop3
  }
  inet_listener pop3s {
    port = $pop3s
    ssl = yes
  }
  service_count = 0
  process_min_avail = 2
  client_limit = 1000
}
service pop3 {
  process_limit = 1000
}
# No auth penalty (2 s doubling to 15 s per failed login from one IP, via
# anvil): tests log in wrongly on purpose, all from 127.0.0.1.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
}

start_failed() {
	local dir=$1
	shift
	echo "dovecot.sh: $*" >&2
	if [[ -s $dir/dovecot.start.out ]]; then
		echo "--- dovecot start output:" >&2
		cat "$dir/dovecot.start.out" >&2
	fi
	if [[ -s $dir/dovecot.log ]]; then
		echo "--- tail of $dir/dovecot.log:" >&2
		tail -n 30 "$dir/dovecot.log" >&2
	fi
	stop_server "$dir" || true
	exit 1
}

# Waits until both ports greet with +OK (the pop3s one through a verified TLS
# handshake) while the master stays alive. `dovecot` returns before its
# daemonized master has written its pid file, so that is awaited here too.
# Exit status: 0 ready, 1 timeout, 2 master died.
wait_ready() {
	local dir=$1 pop3=$2 pop3s=$3
	python - "$pop3" "$pop3s" "$dir" "$START_TIMEOUT" <<'EOF'
import socket, ssl, sys, time
pop3, pop3s, d, timeout = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ctx = ssl.create_default_context(cafile=d + "/ca.pem")
def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
def greets(port, tls):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            if tls:
                s = ctx.wrap_socket(s, server_hostname="localhost")
            return s.recv(512).startswith(b"+OK")
    except (OSError, ssl.SSLError):
        return False
deadline = time.monotonic() + timeout
pid = None
while time.monotonic() < deadline:
    if pid is None:
        try:
            with open(d + "/run/master.pid") as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            pass
    if pid is not None:
        if not alive(pid):
            sys.exit(2)
        if greets(pop3, False) and greets(pop3s, True):
            sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
EOF
}

# The watchdog stops the server (and removes DIR) once PID has exited, so a
# test process killed without running its destructors leaks no Dovecot.
start_watchdog() {
	local dir=$1 watch=$2
	# shellcheck disable=SC2016 # $1.. expand in the child shell
	setsid bash -c '
		tail --pid="$1" -f /dev/null
		DOVECOT_SH_WATCHDOG=1 bash "$2" stop "$3" || true
		rm -rf -- "$3"
	' watchdog "$watch" "$(realpath "$0")" "$dir" </dev/null >/dev/null 2>&1 &
	echo $! >"$dir/watchdog.pid"
}

cmd_start() {
	[[ $# -ge 1 ]] || usage
	local dir=$1 tmpfs=0 watch="" mechanisms="plain login cram-md5 apop scram-sha-1 scram-sha-256 external"
	shift
	while [[ $# -gt 0 ]]; do
		case $1 in
		--tmpfs) tmpfs=1 ;;
		--mechanisms)
			[[ $# -ge 2 && $2 =~ ^[a-z0-9\ -]+$ ]] || die "--mechanisms needs a list such as \"plain login\""
			mechanisms=$2
			shift
			;;
		--watch-pid)
			[[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "--watch-pid needs a pid"
			watch=$2
			shift
			;;
		*) usage ;;
		esac
		shift
	done
	need_root
	check_dovecot
	mkdir -p "$dir"
	dir=$(absdir "$dir")
	[[ -z $(master_pid "$dir") ]] || die "already running in $dir (stop it first)"
	# Unix sockets under DIR/run are limited to 108 bytes of path.
	((${#dir} <= 70)) || die "DIR path too long for Dovecot's sockets (max 70 chars): $dir"
	[[ $dir != *[[:space:]:%\"\\]* ]] || die "DIR must not contain spaces, ':', '%', quotes or backslashes: $dir"

	# Dovecot's unprivileged processes must reach into DIR.
	chmod 0755 "$dir"
	mkdir -p "$dir/mail"
	if ((tmpfs)) && ! mountpoint -q "$dir/mail"; then
		mount -t tmpfs -o "mode=0755,size=${DOVECOT_TMPFS_SIZE:-2g}" popspool-dovecot "$dir/mail" ||
			die "cannot mount a tmpfs on $dir/mail"
	fi
	chmod 0755 "$dir/mail"
	mkdir -p "$dir/passwd.d"
	touch "$dir/passwd"
	chown root:dovecot "$dir/passwd" "$dir/passwd.d"
	chmod 0640 "$dir/passwd"
	chmod 0750 "$dir/passwd.d"
	if ! setpriv --reuid=dovecot --regid=dovecot --clear-groups \
		test -r "$dir/passwd" -a -x "$dir/passwd.d" -a -x "$dir/mail" 2>/dev/null; then
		die "Dovecot's users cannot reach $dir: every parent directory must be world-searchable (o+x); use another DIR or TMPDIR"
	fi

	gen_tls "$dir"
	rm -f "$dir/ports.env"

	local attempt pop3 pop3s rc
	for attempt in 1 2 3 4 5; do
		read -r pop3 pop3s < <(pick_ports) || die "cannot pick free ports (python3?)"
		write_conf "$dir" "$pop3" "$pop3s" "$mechanisms"
		: >"$dir/dovecot.log"
		# The master binds its listeners before it daemonizes, so a port taken
		# in the meantime makes this fail right here.
		if ! "$DOVECOT" -c "$dir/dovecot.conf" </dev/null >"$dir/dovecot.start.out" 2>&1; then
			if grep -qs 'Address already in use' "$dir/dovecot.start.out" "$dir/dovecot.log" && ((attempt < 5)); then
				continue
			fi
			start_failed "$dir" "dovecot failed to start"
		fi
		rc=0
		wait_ready "$dir" "$pop3" "$pop3s" || rc=$?
		case $rc in
		0) break ;;
		2) start_failed "$dir" "dovecot exited during start-up" ;;
		*) start_failed "$dir" "ports $pop3/$pop3s did not answer +OK within ${START_TIMEOUT}s" ;;
		esac
	done

	printf 'POP3_PORT=%s\nPOP3S_PORT=%s\n' "$pop3" "$pop3s" >"$dir/ports.env"
	if [[ -n $watch ]]; then
		start_watchdog "$dir" "$watch"
	fi
	cat "$dir/ports.env"
}

# ---------------------------------------------------------------------------
# stop

# True when the master's only live children are its log process (or none).
# Dovecot's master then has nothing left to do but a fixed ~1-2 s of sleeping
# before it exits; every session, index update and log line is finished.
children() {
	local -a kids=()
	read -ra kids <"/proc/$1/task/$1/children" 2>/dev/null || true
	echo "${kids[@]}"
}

only_log_left() {
	local pid=$1 c cmd
	local -a kids
	[[ -r /proc/$pid/task/$pid/children ]] || return 1
	read -ra kids <<<"$(children "$pid")"
	for c in "${kids[@]}"; do
		cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$c/cmdline") || continue
		[[ -z $cmd || $cmd == */log* ]] || return 1 # empty: a zombie
	done
}

# A process counts as gone once it is a zombie: the daemonized master's
# parent is init, which may take its time to reap it.
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

wait_gone() {
	local pid=$1 ticks=$2 i
	for ((i = 0; i < ticks; i++)); do
		alive "$pid" || return 0
		sleep 0.02
	done
	return 1
}

stop_server() {
	local dir=$1 pid i
	local -a kids=()
	pid=$(master_pid "$dir")
	if [[ -n $pid ]]; then
		kill -TERM "$pid" 2>/dev/null || true
		# The master gives open sessions (pop3 processes) about a second
		# before it signals them; do that at once. They end as at any
		# SIGTERM: "Server shutting down", nothing expunged without QUIT.
		read -ra kids <<<"$(children "$pid")"
		for i in "${kids[@]}"; do
			[[ $(tr '\0' ' ' 2>/dev/null <"/proc/$i/cmdline") == */log* ]] ||
				kill -TERM "$i" 2>/dev/null || true
		done
		kids=()
		for ((i = 0; i < STOP_TIMEOUT * 50; i++)); do
			alive "$pid" || break
			if ((i >= 2)) && only_log_left "$pid"; then
				# Skip the master's idle wait; its log process exits by
				# itself once the master is gone, after writing what is left.
				read -ra kids <<<"$(children "$pid")"
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.02
		done
		if ! wait_gone "$pid" 50; then
			echo "dovecot.sh: master $pid still running after ${STOP_TIMEOUT}s; sending SIGKILL" >&2
			read -ra kids <<<"$(children "$pid")"
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone "$pid" 250 || die "master $pid does not die"
		fi
		for i in "${kids[@]}"; do
			wait_gone "$i" 100 || kill -KILL "$i" 2>/dev/null || true
		done
	fi
	rm -f "$dir/run/master.pid" "$dir/ports.env"
	if mountpoint -q "$dir/mail" 2>/dev/null; then
		umount "$dir/mail" || umount -l "$dir/mail"
	fi
}

cmd_stop() {
	[[ $# -eq 1 ]] || usage
	local dir=$1 wpid
	[[ -d $dir ]] || return 0 # never started or already removed
	need_root
	dir=$(absdir "$dir")
	stop_server "$dir"
	# The watchdog is not needed any more (unless we are the watchdog).
	if [[ -z ${DOVECOT_SH_WATCHDOG:-} && -f $dir/watchdog.pid ]]; then
		wpid=$(<"$dir/watchdog.pid")
		# setsid made it a process-group leader: end it and its tail, after
		# checking that the pid still is our watchdog.
		if [[ $wpid =~ ^[0-9]+$ ]] &&
			tr '\0' ' ' 2>/dev/null <"/proc/$wpid/cmdline" | grep -qF -- " watchdog "; then
			kill -TERM -- "-$wpid" 2>/dev/null || true
		fi
		rm -f "$dir/watchdog.pid"
	fi
}

# ---------------------------------------------------------------------------
# users and mail

check_user() {
	[[ $1 =~ $USER_RE ]] || die "bad user name '$1' (allowed: A-Z a-z 0-9 . _ @ -)"
}

# --hashed stores the password as a SHA512-CRYPT hash, as a site whose
# users come from /etc/shadow or LDAP does: Dovecot still advertises SCRAM
# and CRAM-MD5 but cannot run them for this user, which refuses them.
cmd_adduser() {
	[[ $# -eq 3 || ($# -eq 4 && $4 == --hashed) ]] || usage
	local dir user=$2 password=$3 md stored
	dir=$(absdir "$1")
	check_user "$user"
	[[ $password != *[:$'\n\r']* && -n $password ]] ||
		die "password must be non-empty and contain no ':', CR or LF"
	[[ -d $dir/passwd.d ]] || die "$dir is not a dovecot.sh directory (start it first)"
	[[ ! -e $dir/passwd.d/$user ]] || die "user $user already exists"
	md=$dir/mail/$user/Maildir
	mkdir -p "$md/tmp" "$md/new" "$md/cur"
	chown -R "$MAIL_UID:$MAIL_GID" "$dir/mail/$user"
	chmod 0700 "$dir/mail/$user" "$md" "$md/tmp" "$md/new" "$md/cur"
	local line tmp=$dir/passwd.d/.$user.$$
	stored="{PLAIN}$password"
	if [[ ${4:-} == --hashed ]]; then
		stored="{SHA512-CRYPT}$(openssl passwd -6 -stdin <<<"$password")"
	fi
	line=$(printf '%s:%s:%s:%s::%s' "$user" "$stored" "$MAIL_UID" "$MAIL_GID" "$dir/mail/$user")
	# What Dovecot reads: complete before it appears (rename), root:dovecot 0640.
	printf '%s\n' "$line" >"$tmp"
	chown root:dovecot "$tmp"
	chmod 0640 "$tmp"
	mv -f -- "$tmp" "$dir/passwd.d/$user"
	# All users in one file, for people (one O_APPEND write: no interleaving).
	printf '%s\n' "$line" >>"$dir/passwd"
}

# Delivers FILEs like an MDA: write into tmp/, rename into new/. Stored with
# LF line ends (each CRLF becomes LF); Dovecot sends every bare LF as CRLF.
cmd_deliver() {
	[[ $# -ge 3 ]] || usage
	local dir user=$2 md f tmp size vsize name now sec usec last=0 n=0
	dir=$(absdir "$1")
	shift 2
	check_user "$user"
	md=$dir/mail/$user/Maildir
	[[ -d $md/new ]] || die "no such user: $user"
	for f in "$@"; do
		[[ -f $f ]] || die "no such file: $f"
		# Names sort by (seconds, microseconds), which is how Dovecot orders
		# new mail, so messages get UIDs in delivery order.
		now=$(date +%s%6N)
		((now > last)) || now=$((last + 1))
		last=$now
		sec=${now:0:${#now}-6}
		usec=${now: -6} # zero-padded: sorts right numerically and as text
		n=$((n + 1))
		tmp=$md/tmp/$sec.M${usec}P$$Q$n.popspool-harness
		# (stdin, not a perl argument: perl would open "cmd|" as a pipe)
		perl -pe 's/\r\n/\n/g' <"$f" >"$tmp"
		size=$(stat -c %s "$tmp")
		# Size on the wire: every LF not preceded by CR gains a CR.
		vsize=$((size + $(perl -0777 -ne 'print scalar(() = /(?<!\r)\n/g)' <"$tmp")))
		chown "$MAIL_UID:$MAIL_GID" "$tmp"
		chmod 0600 "$tmp"
		name=${tmp##*/},S=$size,W=$vsize
		mv -- "$tmp" "$md/new/$name"
	done
}

cmd_count() {
	[[ $# -eq 2 ]] || usage
	local dir user=$2 md
	dir=$(absdir "$1")
	check_user "$user"
	md=$dir/mail/$user/Maildir
	[[ -d $md/new ]] || die "no such user: $user"
	find "$md/new" "$md/cur" -mindepth 1 -maxdepth 1 -type f ! -name '.*' | wc -l
}

main() {
	[[ $# -ge 1 ]] || usage
	local cmd=$1
	shift
	case $cmd in
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	adduser) cmd_adduser "$@" ;;
	deliver) cmd_deliver "$@" ;;
	count) cmd_count "$@" ;;
	-h | --help | help) usage ;;
	*) usage ;;
	esac
}

main "$@"
