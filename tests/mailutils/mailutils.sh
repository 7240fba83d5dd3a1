#!/usr/bin/env bash
# Run a private GNU Mailutils pop3d for popspool's tests.
#
#   mailutils.sh start   DIR [--watch-pid PID]
#   mailutils.sh adduser DIR USER PASSWORD
#   mailutils.sh stop    DIR
#
# Everything lives under DIR (pop3d.conf, CA and certificates, the user
# database, mail, locks, log, pid file); nothing is read from
# /etc/mailutils.conf, /etc/passwd or /etc/apop.db. Must run as root: pop3d
# opens the mailboxes of virtual users as root (group mail).
# tests/suite/common/mailutils.rs drives it for the Rust tests (one server
# per test, stopped when the test ends).
#
# The server: `pop3d --config-file=DIR/pop3d.conf --foreground` in daemon
# mode (one child process per connection), put in the background by this
# script, stopped by the pid in DIR/run/pop3d.pid. Two listeners on free
# loopback ports, 127.0.0.1 only:
#   POP3_PORT   tls-mode required: plain POP3 that must upgrade with STLS
#               before any login (CAPA says XTLSREQUIRED instead of USER
#               until then);
#   POP3S_PORT  tls-mode connection: implicit TLS.
# TLS is GnuTLS with the test CA's server certificate (tests/lib/server.sh,
# the same files as the Dovecot harness makes).
#
# Users: the `virtdomain` module, a passwd-style file per domain under
# DIR/virtdomain/, with SHA-512 crypt hashes checked by the `generic`
# module. A user logs in as USER@popspool.test (the domain names the file;
# a bare USER would need the connection on fd 0, i.e. inetd mode). Each
# mailbox is a Maildir, DIR/mail/USER/INBOX/{tmp,new,cur}, owned by
# 5000:5000 like the Dovecot harness's.
#
# What Mailutils 3.15 (Debian 12) does, as the tests see it:
# - The greeting always carries an APOP timestamp, whatever the
#   configuration: "+OK POP3 Ready <pid.time@hostname>". APOP checks the
#   APOP database (apop-database-file, kept by popauth(1)); this one points
#   at DIR/apop.db, which is never created, so APOP is always refused:
#   "-ERR [AUTH] Bad login".
# - CAPA: TOP, UIDL, RESP-CODES, PIPELINING, AUTH-RESP-CODE, "EXPIRENEVER"
#   (sic: EXPIRE and NEVER run together), USER (XTLSREQUIRED before STLS on
#   a tls-mode required port), STLS (before TLS), and after login
#   IMPLEMENTATION. No SASL: AUTH answers "-ERR Not implemented".
# - A wrong password: "-ERR [AUTH] Bad login", without delay.
# - UIDLs are kept in the message: the first UIDL or RETR gives every
#   message an "X-UIDL: <md5>.<time>.<n>" header (a message that has one
#   keeps its own), which RETR sends as the last header line and which is
#   written back into the file when the session ends, with or without QUIT.
#   So RETR returns the delivered message plus that line (see
#   tests/suite/common/mailutils.rs), and LIST sizes grow by it once the
#   UIDLs are assigned (STAT before that counts without it).
# - A message of headers only, without a final newline, loses its last
#   header when it is written back; the tests deliver none.
# - Mandatory locking (on here, lock files in DIR/lock) makes a second
#   session on a mailbox get "-ERR [IN-USE] Mailbox in use".
# - The mail is served as root (virtual users have no uid switch); files
#   it rewrites become root:mail 0600.
set -euo pipefail

readonly MAIL_UID=5000
readonly MAIL_GID=5000
readonly DOMAIN=popspool.test
readonly POP3D=/usr/sbin/pop3d
readonly USER_RE='^[A-Za-z0-9._-]+$'
readonly START_TIMEOUT=10 # seconds until both ports must answer +OK
readonly STOP_TIMEOUT=10  # seconds until the server and its sessions must be gone
# Concurrent sessions (pop3d's default is 20) and pending connections
# (default 4): enough for tests that open many at once.
readonly MAX_CHILDREN=200
readonly BACKLOG=128

die() {
	echo "mailutils.sh: $*" >&2
	exit 1
}

# shellcheck source=../lib/server.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/server.sh"

usage() {
	sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# Debian's courier-pop ships a /usr/sbin/pop3d too (a wrapper around
# couriertcpd, not a POP3 daemon of this syntax), and the two packages
# conflict. Ask dpkg first, so a foreign pop3d is never run at all.
check_pop3d() {
	local owner v
	[[ -x $POP3D ]] ||
		die "$POP3D not found: apt-get install --no-install-recommends mailutils-pop3d (or run tests/deps.sh)"
	owner=$(dpkg-query -S "$POP3D" 2>/dev/null | cut -d: -f1) || true
	if [[ -n $owner && $owner != mailutils-pop3d ]]; then
		die "$POP3D belongs to the package $owner, not to GNU Mailutils (mailutils-pop3d); courier-pop provides a pop3d of its own and conflicts with mailutils-pop3d: the tests need mailutils-pop3d"
	fi
	v=$(timeout 5 "$POP3D" --version 2>/dev/null | head -n 1) || true
	[[ $v == "pop3d (GNU Mailutils) 3."* ]] ||
		die "$POP3D is not GNU Mailutils 3.x pop3d (--version says: ${v:-nothing}); courier-pop provides a pop3d of its own and conflicts with mailutils-pop3d: the tests need mailutils-pop3d"
}

need_root() {
	[[ $(id -u) == 0 ]] || die "must run as root (pop3d opens the virtual users' mailboxes as root)"
}

# The server's pid if it is running for this DIR, else nothing: only a
# pop3d started with DIR's config counts, and not once it is a zombie (its
# parent is init, which may be slow to reap it).
server_pid() {
	local pid
	pid=$(pid_running "$1/run/pop3d.pid" "--config-file=$1/pop3d.conf")
	if [[ -n $pid ]] && alive "$pid"; then
		echo "$pid"
	fi
}

# ---------------------------------------------------------------------------
# start

write_conf() {
	local dir=$1 pop3=$2 pop3s=$3
	cat >"$dir/pop3d.conf" <<EOF
# Private GNU Mailutils pop3d for popspool tests; generated by
# tests/mailutils/mailutils.sh. Loaded with --config-file, which skips
# /etc/mailutils.conf.
mode daemon;
foreground yes;
pidfile $dir/run/pop3d.pid;
max-children $MAX_CHILDREN;
logging {
  syslog no;
  print-severity yes;
}
tcp-wrappers {
  enable no;
}

# Users: DIR/virtdomain/$DOMAIN, passwd lines with crypt hashes.
auth {
  authorization virtdomain;
  authentication generic;
}
virtdomain {
  passwd-dir $dir/virtdomain;
}
# Never created: no user has an APOP secret.
apop-database-file $dir/apop.db;

mandatory-locking {
  enable yes;
  lock-directory $dir/lock;
}

server 127.0.0.1:$pop3 {
  tls-mode required;
  backlog $BACKLOG;
  tls {
    ssl-certificate-file $dir/server.pem;
    ssl-key-file $dir/server.key;
  }
}
server 127.0.0.1:$pop3s {
  tls-mode connection;
  backlog $BACKLOG;
  tls {
    ssl-certificate-file $dir/server.pem;
    ssl-key-file $dir/server.key;
  }
}
EOF
}

start_failed() {
	local dir=$1
	shift
	echo "mailutils.sh: $*" >&2
	if [[ -s $dir/pop3d.log ]]; then
		echo "--- tail of $dir/pop3d.log:" >&2
		tail -n 30 "$dir/pop3d.log" >&2
	fi
	stop_server "$dir" || true
	exit 1
}

cmd_start() {
	[[ $# -ge 1 ]] || usage
	local dir=$1 watch=""
	shift
	while [[ $# -gt 0 ]]; do
		case $1 in
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
	check_pop3d
	mkdir -p "$dir"
	dir=$(absdir "$dir")
	[[ -z $(server_pid "$dir") ]] || die "already running in $dir (stop it first)"
	# The configuration quotes nothing: keep the path a plain word.
	[[ $dir =~ ^[A-Za-z0-9/._-]+$ ]] || die "DIR must be a plain path (A-Z a-z 0-9 / . _ -): $dir"

	chmod 0755 "$dir"
	mkdir -p "$dir/run" "$dir/mail" "$dir/virtdomain" "$dir/lock"
	touch "$dir/virtdomain/$DOMAIN"
	chmod 0700 "$dir/virtdomain"
	chmod 0600 "$dir/virtdomain/$DOMAIN"
	chmod 0755 "$dir/mail"
	gen_tls "$dir"
	rm -f "$dir/ports.env"

	local attempt pop3 pop3s rc pid
	for attempt in 1 2 3 4 5; do
		read -r pop3 pop3s < <(pick_ports) || die "cannot pick free ports (python3?)"
		write_conf "$dir" "$pop3" "$pop3s"
		"$POP3D" --config-file="$dir/pop3d.conf" --config-lint >"$dir/pop3d.log" 2>&1 ||
			start_failed "$dir" "pop3d --config-lint rejects $dir/pop3d.conf"
		rm -f "$dir/run/pop3d.pid"
		: >"$dir/pop3d.log"
		# Its own session, so a signal to the test's process group does not
		# reach it; it binds both listeners, then writes its pid file.
		setsid "$POP3D" --config-file="$dir/pop3d.conf" --foreground \
			</dev/null >>"$dir/pop3d.log" 2>&1 &
		# pop3d writes the same pid once it listens; until then a pop3d
		# that fails to bind is seen dying at once, not after the timeout.
		echo $! >"$dir/run/pop3d.pid"
		rc=0
		wait_ready "$dir" "$dir/run/pop3d.pid" "$pop3" "$pop3s" "$START_TIMEOUT" || rc=$?
		case $rc in
		0) break ;;
		2)
			# Another process took a port between pick_ports and the bind.
			if grep -qs 'Address already in use' "$dir/pop3d.log" && ((attempt < 5)); then
				continue
			fi
			start_failed "$dir" "pop3d exited during start-up"
			;;
		*)
			start_failed "$dir" "ports $pop3/$pop3s did not answer +OK within ${START_TIMEOUT}s"
			;;
		esac
	done
	pid=$(server_pid "$dir")
	[[ -n $pid ]] || start_failed "$dir" "pop3d is up but $dir/run/pop3d.pid does not name it"

	printf 'POP3_PORT=%s\nPOP3S_PORT=%s\n' "$pop3" "$pop3s" >"$dir/ports.env"
	if [[ -n $watch ]]; then
		start_watchdog "$dir" "$watch"
	fi
	cat "$dir/ports.env"
}

# ---------------------------------------------------------------------------
# stop

# SIGTERM to the server ends it and its sessions ("terminating on request":
# nothing is expunged without QUIT). Sessions that linger get SIGKILL.
stop_server() {
	local dir=$1 pid i
	local -a kids=()
	pid=$(server_pid "$dir")
	if [[ -n $pid ]]; then
		read -ra kids <"/proc/$pid/task/$pid/children" 2>/dev/null || true
		kill -TERM "$pid" 2>/dev/null || true
		if ! wait_gone "$pid" $((STOP_TIMEOUT * 50)); then
			echo "mailutils.sh: pop3d $pid still running after ${STOP_TIMEOUT}s; sending SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone "$pid" 250 || die "pop3d $pid does not die"
		fi
		for i in "${kids[@]}"; do
			wait_gone "$i" 100 || kill -KILL "$i" 2>/dev/null || true
		done
	fi
	rm -f "$dir/run/pop3d.pid" "$dir/ports.env"
}

# ---------------------------------------------------------------------------
# users

# One line appended to the domain's file (a single short write, so pop3d,
# which reads the file at every login, never sees half of it).
cmd_adduser() {
	[[ $# -eq 3 ]] || usage
	local dir user=$2 password=$3 home hash
	dir=$(absdir "$1")
	[[ $user =~ $USER_RE ]] || die "bad user name '$user' (allowed: A-Z a-z 0-9 . _ -)"
	[[ $password != *[:$'\n\r']* && -n $password ]] ||
		die "password must be non-empty and contain no ':', CR or LF"
	[[ -f $dir/virtdomain/$DOMAIN ]] || die "$dir is not a mailutils.sh directory (start it first)"
	home=$dir/mail/$user
	[[ ! -e $home ]] || die "user $user already exists"
	mkdir -p "$home/INBOX/tmp" "$home/INBOX/new" "$home/INBOX/cur"
	chown -R "$MAIL_UID:$MAIL_GID" "$home"
	chmod 0700 "$home" "$home/INBOX" "$home/INBOX/tmp" "$home/INBOX/new" "$home/INBOX/cur"
	hash=$(openssl passwd -6 -stdin <<<"$password")
	printf '%s:%s:%s:%s::%s:/usr/sbin/nologin\n' "$user" "$hash" "$MAIL_UID" "$MAIL_GID" "$home" \
		>>"$dir/virtdomain/$DOMAIN"
}

main() {
	[[ $# -ge 1 ]] || usage
	local cmd=$1
	shift
	case $cmd in
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	adduser) cmd_adduser "$@" ;;
	*) usage ;;
	esac
}

main "$@"
