#!/usr/bin/env python3
"""Loopback helpers for the popspool benchmark.

  relay.py delay TARGET_PORT DELAY_MS   a TCP relay on 127.0.0.1 that holds
                                        every chunk DELAY_MS before passing it
                                        on, in each direction (so the round
                                        trip grows by 2 x DELAY_MS)
  relay.py stall [SECONDS]              accepts connections and says nothing
                                        for SECONDS (default 30), then closes
                                        them: a hung server

Both print "PORT=<n>" on stdout once listening, then run until killed. With
--accept-log FILE, the CLOCK_MONOTONIC time of every accepted connection is
appended to FILE (the benchmark uses it to time popspool's start-up).

Why a relay: this kernel has no netem qdisc, and the benchmark must never
use a non-loopback address. The relay keeps reading while it holds data, so
it adds latency without limiting throughput: a client that pipelines pays
the round trip once per window, a lock-step client once per command.
Only 127.0.0.1 is ever bound or connected to.
"""

import collections
import socket
import sys
import threading
import time

HOST = "127.0.0.1"
# Bytes read per recv(): a TLS record is at most ~16 KiB; 64 KiB takes a
# few at once without holding much.
CHUNK = 65536


def log_accept(path):
    if path:
        with open(path, "a") as f:
            f.write("%.6f\n" % time.monotonic())


def listen():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST, 0))
    srv.listen(512)
    print("PORT=%d" % srv.getsockname()[1], flush=True)
    return srv


def pump(src, dst, delay):
    """Copies src to dst, each chunk released `delay` seconds after it arrived."""
    queue = collections.deque()
    cond = threading.Condition()

    def reader():
        try:
            while True:
                data = src.recv(CHUNK)
                with cond:
                    queue.append((time.monotonic() + delay, data))
                    cond.notify()
                if not data:
                    return
        except OSError:
            with cond:
                queue.append((time.monotonic() + delay, b""))
                cond.notify()

    def writer():
        while True:
            with cond:
                while not queue:
                    cond.wait()
                due, data = queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                # Pass the end of stream on, half-close only.
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    threading.Thread(target=reader, daemon=True).start()
    threading.Thread(target=writer, daemon=True).start()


def delay_main(target_port, delay_ms, accept_log):
    delay = delay_ms / 1000.0
    srv = listen()
    while True:
        client, _ = srv.accept()
        log_accept(accept_log)
        try:
            server = socket.create_connection((HOST, target_port))
        except OSError:
            client.close()
            continue
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pump(client, server, delay)
        pump(server, client, delay)


def stall_main(seconds, accept_log):
    srv = listen()
    while True:
        conn, _ = srv.accept()
        log_accept(accept_log)
        # Silent; a client should give up by its own timeout. Closed in the
        # end, so a client that never times out is not held forever.
        threading.Timer(seconds, conn.close).start()


def main(argv):
    accept_log = None
    if "--accept-log" in argv:
        i = argv.index("--accept-log")
        accept_log = argv[i + 1]
        del argv[i : i + 2]
    if len(argv) == 3 and argv[0] == "delay":
        delay_main(int(argv[1]), float(argv[2]), accept_log)
    elif argv[:1] == ["stall"] and len(argv) <= 2:
        stall_main(float(argv[1]) if len(argv) == 2 else 30.0, accept_log)
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
