#!/usr/bin/env python3
"""popspool benchmark driver; run it through tests/bench/bench.sh.

Starts a private Dovecot (mail on tmpfs), fills identical mailboxes fresh
for every run, warms Dovecot's index with one STAT login, runs each client
(popspool, mpop, fetchmail, getmail6), checks that every message arrived and
the server mailbox is empty, and prints one table with the median of the
runs. Clients are interleaved: each run rotates their order, so machine
noise (other builds on this 2-core box) spreads over all of them.

Scenarios (see --help): a throughput to tmpfs, b throughput to disk,
c latency through a 25 ms-each-way loopback relay, d one 50 MiB message,
e daemon memory over many SIGUSR1-driven polls, f 200 accounts in one
configuration with dead and stalled servers among them.

Only loopback addresses are used. TLS is always verified against the
harness CA: popspool ca_file, mpop tls_trust_file, fetchmail
sslcertck + sslcertfile, getmail6 ca_certs (which also turns on its
host-name check).
"""

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import poplib
import pwd

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DOVECOT_SH = os.path.join(REPO, "tests", "dovecot", "dovecot.sh")
RELAY = os.path.join(HERE, "relay.py")

MAIL_UID = 5000
MAIL_GID = 5000
PASSWORD = "bench-secret"
ALL_CLIENTS = ["popspool", "mpop", "fetchmail", "getmail"]
# A client run that takes longer than this is killed and reported failed:
# fetchmail needs ~2 round trips per message, so (c) at 300 messages is
# ~30 s; nothing honest takes 15 minutes.
CLIENT_TIMEOUT = 900


def python_exe():
    # Debian's python3 starts in ~30 ms; a pyenv shim takes ~150 ms.
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


class Fail(Exception):
    pass


# ---------------------------------------------------------------------------
# mail


def small_messages(n, seed=6):
    """n deterministic ~4 KiB messages: mostly text/plain, every 5th a
    multipart/mixed with a small base64 attachment; a few dot-stuffing lines."""
    rng = random.Random(seed)
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod "
             "tempor incididunt ut labore et dolore magna aliqua invoice order "
             "shipment delivery pallet customs").split()
    out = []
    for i in range(n):
        head = (
            "Return-Path: <sender%d@example.org>\n"
            "From: Sender %d <sender%d@example.org>\n"
            "To: Receiver <rcpt@example.com>\n"
            "Cc: Archive <archive@example.com>\n"
            "Subject: =?UTF-8?Q?Lieferung_Nr=2E_%d_f=C3=BCr_K=C3=B6ln?=\n"
            "Message-ID: <bench-%d@example.org>\n"
            "Date: Sat, 21 Nov 2026 10:%02d:%02d +0000\n"
            "MIME-Version: 1.0\n" % (i, i, i, i, i, (i // 60) % 60, i % 60)
        )
        lines = []
        size = 0
        target = 3000 + rng.randrange(600)
        while size < target:
            line = " ".join(rng.choice(words) for _ in range(rng.randrange(6, 14)))
            if rng.randrange(40) == 0:
                line = "." + line  # needs dot-stuffing on the wire
            lines.append(line)
            size += len(line) + 1
        text = "\n".join(lines) + "\n"
        if i % 5 == 4:
            blob = bytes(rng.randrange(256) for _ in range(700))
            b64 = base64.encodebytes(blob).decode()
            msg = (
                head + "Content-Type: multipart/mixed; boundary=\"=_b%d\"\n\n"
                "--=_b%d\nContent-Type: text/plain; charset=utf-8\n\n%s"
                "--=_b%d\nContent-Type: application/octet-stream\n"
                "Content-Transfer-Encoding: base64\n"
                "Content-Disposition: attachment; filename=\"data-%d.bin\"\n\n%s"
                "--=_b%d--\n" % (i, i, text[:2000], i, i, b64, i)
            )
        else:
            msg = head + "Content-Type: text/plain; charset=utf-8\n\n" + text
        out.append(msg.encode())
    return out


def big_message(attachment_mib=38):
    """One message with an `attachment_mib` MiB base64 attachment (~51 MiB)."""
    data = random.Random(9).randbytes(attachment_mib << 20)
    b64 = base64.encodebytes(data)  # 76-character lines, LF
    head = (
        b"From: Big <big@example.org>\nTo: rcpt@example.com\nSubject: big file\n"
        b"Message-ID: <big@example.org>\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=\"=_big\"\n\n"
        b"--=_big\nContent-Type: text/plain; charset=us-ascii\n\nSee attached.\n"
        b"--=_big\nContent-Type: application/octet-stream\n"
        b"Content-Transfer-Encoding: base64\n"
        b"Content-Disposition: attachment; filename=\"big.bin\"\n\n"
    )
    return [head + b64 + b"--=_big--\n"]


# ---------------------------------------------------------------------------
# the server


class Dovecot:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "dovecot")
        os.makedirs(self.dir)
        out = subprocess.run(
            ["bash", DOVECOT_SH, "start", self.dir, "--tmpfs", "--watch-pid", str(os.getpid())],
            check=True, stdout=subprocess.PIPE, text=True,
        ).stdout
        ports = dict(l.split("=", 1) for l in out.split() if "=" in l)
        self.pop3s = int(ports["POP3S_PORT"])
        self.ca = os.path.join(self.dir, "ca.pem")
        self.users = set()
        self.seq = 0

    def stop(self):
        subprocess.run(["bash", DOVECOT_SH, "stop", self.dir], check=False)

    def maildir(self, user):
        return os.path.join(self.dir, "mail", user, "Maildir")

    def add_user(self, user):
        if user not in self.users:
            subprocess.run(["bash", DOVECOT_SH, "adduser", self.dir, user, PASSWORD], check=True)
            self.users.add(user)

    def fill(self, user, msgs):
        """Empties the mailbox, then delivers `msgs` as an MDA does (LF line
        ends, tmp/ then rename into new/, `,S=,W=` sizes in the name)."""
        self.add_user(user)
        md = self.maildir(user)
        for sub in ("new", "cur", "tmp"):
            for name in os.listdir(os.path.join(md, sub)):
                os.unlink(os.path.join(md, sub, name))
        now = int(time.time())
        for i, raw in enumerate(msgs):
            self.seq += 1
            base = "%d.M%06dP%dQ%d.bench" % (now, i % 1000000, os.getpid(), self.seq)
            tmp = os.path.join(md, "tmp", base)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, raw)
            os.fchown(fd, MAIL_UID, MAIL_GID)
            os.close(fd)
            wire = len(raw) + raw.count(b"\n")
            os.rename(tmp, os.path.join(md, "new", "%s,S=%d,W=%d" % (base, len(raw), wire)))

    def count(self, user):
        md = self.maildir(user)
        return sum(
            1 for sub in ("new", "cur") for n in os.listdir(os.path.join(md, sub))
            if not n.startswith(".")
        )

    def warm(self, user):
        """One login and STAT, so Dovecot indexes the mailbox before timing."""
        ctx = ssl.create_default_context(cafile=self.ca)
        p = poplib.POP3_SSL("localhost", self.pop3s, context=ctx, timeout=60)
        p.user(user)
        p.pass_(PASSWORD)
        count, _ = p.stat()
        p.quit()
        return count


# ---------------------------------------------------------------------------
# measuring a process


def measured(argv, cwd, env=None, timeout=CLIENT_TIMEOUT):
    """Runs argv to completion; wall seconds, CPU (user + sys of it and its
    reaped children, e.g. fetchmail's MDA), peak RSS (KiB, the largest of
    them), exit status.

    GNU time does the accounting: a child forked from this Python process
    would inherit its ~20 MiB high-water mark (the kernel keeps the larger of
    the old and new image's at exec), while time's own children start from
    its ~1 MiB."""
    logf = open(os.path.join(cwd, "client.log"), "wb")
    acct = os.path.join(cwd, "time.out")
    t0 = time.monotonic()
    p = subprocess.Popen(["/usr/bin/time", "-o", acct, "-f", "%U %S %M"] + argv, cwd=cwd,
                         env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    wall = time.monotonic() - t0
    logf.close()
    user = sys_ = 0.0
    rss = 0
    # sandboxed.sh runs popspool as a transient systemd service, outside
    # this process tree: its wrapper has GNU time inside the service write
    # time.inner, the figures of popspool itself.
    inner = os.path.join(cwd, "time.inner")
    if os.path.exists(inner):
        acct = inner
    try:
        with open(acct) as f:
            last = [l for l in f.read().splitlines() if l.strip()][-1].split()
        user, sys_, rss = float(last[0]), float(last[1]), int(last[2])
    except (OSError, IndexError, ValueError):
        pass
    return {"wall": wall, "cpu": user + sys_, "rss_kib": rss, "rc": p.returncode, "t0": t0}


def log_tail(cwd, n=15):
    try:
        with open(os.path.join(cwd, "client.log"), "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return ""


def count_files(*dirs):
    return sum(
        1 for d in dirs if os.path.isdir(d) for n in os.listdir(d) if not n.startswith(".")
    )


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------
# clients: each writes its configuration into `run` and returns (argv, a
# function counting what it delivered)


class Account:
    def __init__(self, name, user, port, timeout=60):
        self.name, self.user, self.port, self.timeout = name, user, port, timeout


def setup_popspool(args, run, accounts, ca, out):
    # popspool logs in as mpop is set up to (`auth user`) and getmail6
    # does: USER/PASS inside TLS. Its `auto` would pick SCRAM-SHA-256, whose
    # 4096 PBKDF2 rounds on both ends the peers would not pay.
    conf = os.path.join(run, "popspool.ini")
    text = "[global]\nspool = %s\nstate_dir = %s\nmime = yes\n\n" % (
        os.path.join(out, "spool"), os.path.join(out, "state"))
    for a in accounts:
        text += ("[account %s]\nhost = localhost\nport = %d\ntls = implicit\nca_file = %s\n"
                 "user = %s\npassword = %s\nauth = user\ntimeout = %ds\n\n"
                 % (a.name, a.port, ca, a.user, PASSWORD, a.timeout))
    write_private(conf, text)
    argv = [args.popspool, "-c", conf, "--once"]

    def delivered():
        return sum(count_files(os.path.join(out, "spool", a.name, "new")) for a in accounts)

    return argv, delivered


def setup_mpop(args, run, accounts, ca, out):
    conf = os.path.join(run, "mpoprc")
    text = ("defaults\ntls on\ntls_starttls off\ntls_trust_file %s\nauth user\n"
            "keep off\nuidls_file %s/uidls-%%U\n\n" % (ca, out))
    for a in accounts:
        md = os.path.join(out, "md", a.name)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        text += ("account %s\nhost localhost\nport %d\nuser %s\npassword %s\ntimeout %d\n"
                 "delivery maildir %s\n\n" % (a.name, a.port, a.user, PASSWORD, a.timeout, md))
    write_private(conf, text)
    argv = ["mpop", "-C", conf, "-q", "-a"]

    def delivered():
        return sum(count_files(os.path.join(out, "md", a.name, "new"),
                               os.path.join(out, "md", a.name, "cur")) for a in accounts)

    return argv, delivered


def setup_fetchmail(args, run, accounts, ca, out):
    # fetchmail delivers by SMTP or through an MDA; safecat is the smallest
    # honest Maildir MDA (writes into tmp/, fsyncs, links into new/).
    conf = os.path.join(run, "fetchmailrc")
    text = "set no syslog\n\n"
    for a in accounts:
        md = os.path.join(out, "md", a.name)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        text += ('poll localhost service %d protocol pop3 timeout %d:\n'
                 '  user "%s" there with password "%s"\n'
                 '  ssl sslcertck sslcertfile "%s"\n'
                 '  fetchall nokeep\n'
                 '  mda "/usr/bin/safecat %s/tmp %s/new"\n\n'
                 % (a.port, a.timeout, a.user, PASSWORD, ca, md, md))
    write_private(conf, text)
    argv = ["fetchmail", "-f", conf, "-i", os.path.join(out, "fetchids"),
            "--pidfile", os.path.join(run, "fetchmail.pid"), "--nosyslog", "-N", "-s"]

    def delivered():
        return sum(count_files(os.path.join(out, "md", a.name, "new"),
                               os.path.join(out, "md", a.name, "cur")) for a in accounts)

    return argv, delivered


def setup_getmail(args, run, accounts, ca, out):
    # getmail6 refuses to deliver as root, and wants a passwd entry: it runs
    # as `nobody`, which owns its directories (as a user's getmail would).
    pw = pwd.getpwnam("nobody")
    uid, gid = pw.pw_uid, pw.pw_gid
    state = os.path.join(out, "getmail")
    os.makedirs(state)
    argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups",
            "getmail", "--getmaildir", state, "--quiet"]
    for d in (run, state):
        os.chown(d, uid, gid)
    for a in accounts:
        md = os.path.join(out, "md", a.name)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        for d in (out, os.path.join(out, "md"), md) + tuple(
                os.path.join(md, sub) for sub in ("tmp", "new", "cur")):
            os.chown(d, uid, gid)
        rc = os.path.join(run, "getmailrc-%s" % a.name)
        write_private(rc, "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = localhost\n"
                      "port = %d\nusername = %s\npassword = %s\nca_certs = %s\ntimeout = %d\n\n"
                      "[destination]\ntype = Maildir\npath = %s/\n\n"
                      "[options]\ndelete = true\nread_all = true\nverbose = 0\n"
                      % (a.port, a.user, PASSWORD, ca, a.timeout, md))
        os.chown(rc, uid, gid)
        argv += ["--rcfile", rc]

    def delivered():
        return sum(count_files(os.path.join(out, "md", a.name, "new"),
                               os.path.join(out, "md", a.name, "cur")) for a in accounts)

    return argv, delivered


SETUP = {
    "popspool": setup_popspool,
    "mpop": setup_mpop,
    "fetchmail": setup_fetchmail,
    "getmail": setup_getmail,
}


# ---------------------------------------------------------------------------
# scenarios


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.results = []  # rows: dict(client, scenario, runs=[...], notes)
        self.failures = []
        self.dc = Dovecot(self.work)
        self.tmpfs_out = os.path.join(self.work, "out-tmpfs")
        os.makedirs(self.tmpfs_out)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % args.tmpfs_size,
                        "popspool-bench", self.tmpfs_out], check=True)
        self.disk_out = args.disk_dir
        os.makedirs(self.disk_out, exist_ok=True)
        self.helpers = []

    def close(self):
        for h in self.helpers:
            if h.poll() is None:
                h.kill()
                h.wait()
        self.dc.stop()
        subprocess.run(["umount", self.tmpfs_out], check=False)
        shutil.rmtree(self.disk_out, ignore_errors=True)

    def helper(self, *argv):
        """Starts relay.py with argv; returns (process, port)."""
        p = subprocess.Popen([python_exe(), RELAY] + list(argv), stdout=subprocess.PIPE, text=True)
        self.helpers.append(p)
        line = p.stdout.readline()
        if not line.startswith("PORT="):
            raise Fail("relay.py %s did not start" % " ".join(argv))
        return p, int(line.strip().split("=")[1])

    def fresh(self, base, tag):
        d = os.path.join(base, tag)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d

    def clients(self):
        return [c for c in self.args.clients if c in SETUP]

    def record(self, client, scenario, run, notes=""):
        for row in self.results:
            if row["client"] == client and row["scenario"] == scenario:
                row["runs"].append(run)
                if notes:
                    row["notes"] = notes
                return
        self.results.append({"client": client, "scenario": scenario, "runs": [run], "notes": notes})

    def drain(self, scenario, msgs, base, port=None, label=None, keep_until_end=False):
        """Runs every client `runs` times on a fresh copy of `msgs`.

        keep_until_end: delete the clients' output only after the last run.
        On ext4 without a journal (this project's VMs), inodes deleted in the
        last 30 s are skipped, one by one, when new ones are allocated
        (`recently_deleted()`), so deleting one run's 40,000 files would make
        the next client's file creation several times slower."""
        label = label or scenario
        clients = self.clients()
        kept = []
        for r in range(self.args.runs):
            order = clients[r % len(clients):] + clients[:r % len(clients)]
            for c in order:
                user = "%s-%s" % (scenario, c)
                self.dc.fill(user, msgs)
                if self.dc.warm(user) != len(msgs):
                    raise Fail("%s: warm-up STAT does not see %d messages" % (user, len(msgs)))
                run = self.fresh(self.work, "run-%s-%s-%d" % (scenario, c, r))
                out = self.fresh(base, "out-%s-%s-%d" % (scenario, c, r))
                acct = Account("acct", user, port or self.dc.pop3s)
                argv, delivered = SETUP[c](self.args, run, [acct], self.dc.ca, out)
                m = measured(argv, run, env=dict(os.environ, HOME=run))
                got, left = delivered(), self.dc.count(user)
                m["msgs"] = len(msgs)
                log("%s %s run %d: %.2f s, %d delivered, %d left on server, rc %d"
                    % (label, c, r + 1, m["wall"], got, left, m["rc"]))
                if m["rc"] != 0 or got != len(msgs) or left != 0:
                    self.failures.append("%s %s run %d: rc %d, delivered %d of %d, %d left on "
                                         "the server\n%s" % (label, c, r + 1, m["rc"], got,
                                                             len(msgs), left, log_tail(run)))
                    m["failed"] = True
                self.record(c, label, m)
                if keep_until_end:
                    kept.append(out)
                else:
                    shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(run, ignore_errors=True)
        for out in kept:
            shutil.rmtree(out, ignore_errors=True)

    def scenario_a(self):
        self.drain("a", small_messages(self.args.msgs), self.tmpfs_out,
                   label="a %dx4K tmpfs" % self.args.msgs)

    def scenario_b(self):
        self.drain("b", small_messages(self.args.msgs), self.disk_out,
                   label="b %dx4K disk" % self.args.msgs, keep_until_end=True)

    def scenario_c(self):
        _, port = self.helper("delay", str(self.dc.pop3s), str(self.args.delay_ms))
        self.drain("c", small_messages(self.args.lat_msgs, seed=3), self.tmpfs_out, port=port,
                   label="c %dx4K %dms RTT" % (self.args.lat_msgs, 2 * self.args.delay_ms))

    def scenario_d(self):
        self.drain("d", big_message(), self.tmpfs_out, label="d 1x51M mime")

    def scenario_e(self):
        """The daemon, polling an empty mailbox `polls` times, each poll
        started by SIGUSR1 once the previous one has logged its end."""
        polls = self.args.polls
        user = "e-daemon"
        self.dc.fill(user, [])
        run = self.fresh(self.work, "run-e")
        out = self.fresh(self.tmpfs_out, "out-e")
        acct = Account("idle", user, self.dc.pop3s)
        argv, _ = setup_popspool(self.args, run, [acct], self.dc.ca, out)
        conf = argv[2]
        with open(conf, "a") as f:
            f.write("poll_interval = 1h\n")
        argv = [self.args.popspool, "-c", conf, "--log-level", "debug"]
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        done = 0
        rss_start = None
        failed = None
        deadline = time.monotonic() + CLIENT_TIMEOUT
        for line in p.stderr:
            if b"nothing new" in line:
                done += 1
                if done == 1:
                    rss_start = proc_status(p.pid)["VmRSS"]
                    t_first = time.monotonic()
                if done >= polls:
                    break
                os.kill(p.pid, signal.SIGUSR1)
            elif b"WARN" in line or b"ERROR" in line:
                failed = line.decode(errors="replace").strip()
                break
            if time.monotonic() > deadline:
                failed = "timed out after %d polls" % done
                break
        st = proc_status(p.pid)
        cpu = proc_cpu(p.pid)
        wall = time.monotonic() - t_first if done else 0.0
        p.send_signal(signal.SIGTERM)
        p.stderr.close()
        p.wait(timeout=30)
        m = {"wall": wall, "cpu": cpu, "rss_kib": st["VmHWM"], "rc": p.returncode,
             "msgs": max(done - 1, 0), "t0": t0}
        note = "%d polls; VmRSS after poll 1: %d KiB, after poll %d: %d KiB" % (
            done, rss_start or 0, done, st["VmRSS"])
        if failed or done < polls:
            self.failures.append("e daemon: %s" % (failed or "only %d polls" % done))
            m["failed"] = True
        log("e daemon: " + note)
        m["rss_start_kib"], m["rss_end_kib"] = rss_start, st["VmRSS"]
        self.record("popspool", "e daemon polls", m, note)
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)

    def scenario_f(self):
        """`accounts` accounts in one configuration, all due at once; the
        first `bad` point at dead (refused) and stalled (silent) servers."""
        n, bad, per = self.args.accounts, self.args.bad_accounts, self.args.f_msgs
        timeout = self.args.f_timeout
        accept_log = os.path.join(self.work, "stall-accepts")
        _, stall_port = self.helper("stall", str(self.args.stall_s), "--accept-log", accept_log)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
        s.close()  # nothing listens there now: connection refused
        msgs = small_messages(per, seed=4)
        good = n - bad
        label = "f %d accts, %d bad" % (n, bad)
        clients = self.clients()
        for r in range(self.args.runs):
            order = clients[r % len(clients):] + clients[:r % len(clients)]
            for c in order:
                accounts = []
                # Stalled first: the one the start-up time is measured on.
                for i in range(bad):
                    port = stall_port if i % 2 == 0 else dead_port
                    accounts.append(Account("bad%d" % i, "nobody", port, timeout))
                for i in range(good):
                    user = "f%03d" % i
                    self.dc.fill(user, msgs)
                    accounts.append(Account("a%03d" % i, user, self.dc.pop3s, timeout))
                run = self.fresh(self.work, "run-f-%s-%d" % (c, r))
                out = self.fresh(self.tmpfs_out, "out-f-%s-%d" % (c, r))
                argv, delivered = SETUP[c](self.args, run, accounts, self.dc.ca, out)
                note = ""
                extra = {}
                if c == "popspool":
                    chk = measured([self.args.popspool, "-c", argv[2], "--check"], run)
                    extra["check_s"] = chk["wall"]
                    if chk["rc"] != 0:
                        self.failures.append("f popspool --check: rc %d\n%s"
                                             % (chk["rc"], log_tail(run)))
                if os.path.exists(accept_log):
                    os.unlink(accept_log)
                m = measured(argv, run, env=dict(os.environ, HOME=run))
                if c == "popspool":
                    first = first_accept(accept_log)
                    extra["first_poll_s"] = (first - m["t0"]) if first else None
                m.update(extra)
                if c == "popspool":
                    m["startup_s"] = daemon_startup(self.args.popspool, argv[2])
                got = delivered()
                left = sum(self.dc.count("f%03d" % i) for i in range(good))
                m["msgs"] = good * per
                # Dead and stalled accounts fail by design: exit 75 (popspool),
                # 69/75 and friends from the others. Judge by what arrived.
                log("%s %s run %d: %.2f s, %d of %d delivered, %d left, rc %d"
                    % (label, c, r + 1, m["wall"], got, good * per, left, m["rc"]))
                if got != good * per or left != 0:
                    self.failures.append("%s %s run %d: delivered %d of %d, %d left\n%s"
                                         % (label, c, r + 1, got, good * per, left, log_tail(run)))
                    m["failed"] = True
                self.record(c, label, m)
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(run, ignore_errors=True)
        for row in self.results:
            if row["client"] == "popspool" and row["scenario"] == label:
                ms = lambda k: "%.0f ms" % (1000 * statistics.median(
                    x[k] for x in row["runs"])) if all(x.get(k) is not None
                                                      for x in row["runs"]) else "n/a"
                row["notes"] = ("start-up %s, first connection %s after exec; --check %s; "
                                "timeout %ds" % (ms("startup_s"), ms("first_poll_s"),
                                                 ms("check_s"), timeout))


def daemon_startup(popspool, conf):
    """Seconds from exec until the daemon logs that it started (configuration
    read, every account's status record loaded, signals installed): what
    happens before the first poll. The daemon is then killed."""
    t0 = time.monotonic()
    p = subprocess.Popen([popspool, "-c", conf], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = None
    for line in p.stderr:
        if b" started with " in line:
            took = time.monotonic() - t0
            break
    p.kill()
    p.wait()
    p.stderr.close()
    return took


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def first_accept(path):
    try:
        with open(path) as f:
            return min(float(l) for l in f if l.strip())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------
# the table


def table(results, runs):
    med = lambda row, k: statistics.median(r[k] for r in row["runs"])
    mpop_wall = {row["scenario"]: med(row, "wall") for row in results if row["client"] == "mpop"}
    head = ["client", "scenario", "wall s", "msgs/s", "CPU s", "peak RSS MiB", "x mpop", "notes"]
    rows = []
    for row in results:
        wall = med(row, "wall")
        msgs = med(row, "msgs")
        ratio = mpop_wall.get(row["scenario"])
        failed = any(r.get("failed") for r in row["runs"])
        rows.append([
            row["client"],
            row["scenario"],
            "%.3f" % wall,
            "%.0f" % (msgs / wall) if wall > 0 else "-",
            "%.2f" % med(row, "cpu"),
            "%.1f" % (med(row, "rss_kib") / 1024.0),
            ("%.2f" % (wall / ratio)) if ratio else "-",
            ("FAILED " if failed else "") + row.get("notes", ""),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    lines = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in rows]
    lines.append("")
    lines.append("median of %d run(s); wall and CPU in seconds; CPU = user + sys of the client "
                 "and its children; peak RSS = largest of them; x mpop = wall / mpop's wall "
                 "in the same scenario" % runs)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--popspool", required=True, help="the popspool binary")
    ap.add_argument("--runs", type=int, default=3, help="runs per client and scenario (median)")
    ap.add_argument("--scenarios", default="abcdef", help="letters of the scenarios to run")
    ap.add_argument("--clients", default=",".join(ALL_CLIENTS), help="comma-separated")
    ap.add_argument("--msgs", type=int, default=10000, help="messages in (a) and (b)")
    ap.add_argument("--lat-msgs", type=int, default=300, help="messages in (c)")
    ap.add_argument("--delay-ms", type=float, default=25, help="(c): delay in each direction")
    ap.add_argument("--polls", type=int, default=10000, help="(e): daemon polls")
    ap.add_argument("--accounts", type=int, default=200, help="(f): accounts")
    ap.add_argument("--bad-accounts", type=int, default=4, help="(f): dead/stalled among them")
    ap.add_argument("--f-msgs", type=int, default=5, help="(f): messages per good account")
    ap.add_argument("--f-timeout", type=int, default=5, help="(f): every client's timeout, s")
    ap.add_argument("--stall-s", type=float, default=30,
                    help="(f): the stalled server closes silent connections after this long")
    ap.add_argument("--workdir", required=True, help="scratch directory (short path)")
    ap.add_argument("--disk-dir", required=True, help="(b): output directory on the real disk")
    ap.add_argument("--tmpfs-size", default="3g")
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args()
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for c in args.clients:
        if c not in SETUP:
            ap.error("unknown client %s" % c)
    args.popspool = os.path.abspath(args.popspool)

    bench = Bench(args)
    # Clean up the mounts and the server on Ctrl-C or kill too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for s in args.scenarios:
            getattr(bench, "scenario_" + s)()
    finally:
        bench.close()
    print(table(bench.results, args.runs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(bench.results, f, indent=1)
    if bench.failures:
        print("\nFAILURES:\n" + "\n\n".join(bench.failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
