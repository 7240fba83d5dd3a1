# Shared by the private test servers (tests/dovecot/dovecot.sh,
# tests/mailutils/mailutils.sh): the test CA and certificates, free loopback
# ports, and the watchdog that stops a server whose test process died.
# Sourced, not run; the sourcing script defines die(), usage(), need_root()
# and stop_server DIR.

# Debian's python3 starts in ~30 ms; a pyenv shim first in PATH takes ~150 ms.
python() {
	if [[ -x /usr/bin/python3 ]]; then
		/usr/bin/python3 "$@"
	else
		python3 "$@"
	fi
}

# pid_running PIDFILE NEEDLE: the pid PIDFILE holds if that process's
# command line contains NEEDLE (the server's configuration file), else
# nothing, so a stale pid file can never make us signal an unrelated process.
pid_running() {
	local pid cmdline
	[[ -f $1 ]] || return 0
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 0
	[[ $cmdline == *"$2"* ]] || return 0
	echo "$pid"
}

# Absolute, symlink-free path of an existing directory.
absdir() {
	[[ -d $1 ]] || die "no such directory: $1"
	(cd "$1" && pwd -P)
}

# The test CA and the certificates under DIR (the file names are what
# tests/suite/common/dovecot.rs and mailutils.rs read).
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

# wait_ready DIR PIDFILE POP3 POP3S TIMEOUT: waits until both ports greet
# with +OK (the pop3s one through a TLS handshake verified with DIR/ca.pem)
# while the server whose pid PIDFILE holds stays alive. A daemonizing server
# may return before it has written its pid file, so that is awaited here too.
# Exit status: 0 ready, 1 timeout, 2 server died.
wait_ready() {
	python - "$@" <<'EOF'
import socket, ssl, sys, time
d, pidfile = sys.argv[1], sys.argv[2]
pop3, pop3s, timeout = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
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
            with open(pidfile) as f:
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

# The watchdog stops the server (and removes DIR) once PID has exited, so a
# test process killed without running its destructors leaks no server. It
# runs "SCRIPT stop DIR" with TEST_SERVER_WATCHDOG=1 set.
start_watchdog() {
	local dir=$1 watch=$2
	# shellcheck disable=SC2016 # $1.. expand in the child shell
	setsid bash -c '
		tail --pid="$1" -f /dev/null
		TEST_SERVER_WATCHDOG=1 bash "$2" stop "$3" || true
		rm -rf -- "$3"
	' watchdog "$watch" "$(realpath "$0")" "$dir" </dev/null >/dev/null 2>&1 &
	echo $! >"$dir/watchdog.pid"
}

# Ends DIR's watchdog, unless we are that watchdog (the server is stopped).
stop_watchdog() {
	local dir=$1 wpid
	if [[ -z ${TEST_SERVER_WATCHDOG:-} && -f $dir/watchdog.pid ]]; then
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

# `SCRIPT stop DIR`: the server, then its watchdog.
cmd_stop() {
	[[ $# -eq 1 ]] || usage
	local dir=$1
	[[ -d $dir ]] || return 0 # never started or already removed
	need_root
	dir=$(absdir "$dir")
	stop_server "$dir"
	stop_watchdog "$dir"
}
