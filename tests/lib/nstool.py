#!/usr/bin/env python3
"""tests/lib/nstool.py -- small traffic tools for the north-south e2e tests.

Every loop is bounded in count and time. Subcommands:
  udp-serve ADDR PORT SECS OUT      log "src_ip:src_port" of each datagram to OUT
  udp-from LPORT SECS DST:PORT...   one socket bound to LPORT sends to each
                                    DST once, then waits for replies
  udp-count ADDR PORT SECS OUT      count distinct sources; OUT: "<n> <ips>"
  udp-flows N FIRST DST PORT        N sockets, source ports FIRST.., one
                                    datagram each, kept open 2 s
  echo-id DST ID COUNT SECS         raw ICMP echo requests with identifier ID;
                                    prints how many replies with ID came back
  tcp-wait open|closed SRC DST PORT SECS
                                    TCP connects from SRC every 20 ms (each
                                    bounded by 0.25 s) until 3 in a row have
                                    the outcome (open: connected; closed: not),
                                    at most SECS; prints "START END" (epoch ms)
                                    of the first attempt of that run, or "never"
  tcp-closed SRC DST PORT SECS      TCP connects from SRC every 20 ms (each
                                    bounded by 0.25 s) for SECS: prints how
                                    many were tried if none connected, else
                                    "open" (at the first that did)
  udp-echo ADDR PORT NAME SECS OUT  answer each datagram with "NAME <payload>",
                                    log "src_ip:src_port" of each to OUT
  tcp-echo ADDR PORT NAME SECS OUT  answer each line of each connection with
                                    "NAME <line>", log "src_ip:src_port" of
                                    each connection to OUT
  udp-ask DST PORT SECS             one datagram, prints "src_ip:src_port
                                    <answer>" of the answer (or "none")
  tcp-hold DST PORT SECS OUT [SRC]  one connection (from SRC), a line every 0.1 s for
                                    SECS, each answer awaited (1 s); writes
                                    "<server name> <lines answered> ok|failed"
                                    to OUT when it ends
  http-serve ADDR PORT DIR SECS     an HTTP server of the files in DIR (404
                                    for a missing one), without the reverse
                                    DNS lookup http.server does at start
"""

import threading

import socket
import struct
import sys
import time


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def udp_serve(addr, port, secs, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    end = time.time() + float(secs)
    with open(out, "a", buffering=1) as f:
        while time.time() < end:
            s.settimeout(max(0.05, end - time.time()))
            try:
                data, (ip, p) = s.recvfrom(2048)
            except socket.timeout:
                break
            f.write("%s:%d\n" % (ip, p))
            s.sendto(data, (ip, p))


def udp_from(lport, secs, *dsts):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(lport)))
    for d in dsts:
        ip, p = d.split(":")
        s.sendto(b"eim", (ip, int(p)))
    got = 0
    end = time.time() + float(secs)
    while got < len(dsts) and time.time() < end:
        s.settimeout(max(0.05, end - time.time()))
        try:
            s.recvfrom(2048)
            got += 1
        except socket.timeout:
            break
    print(got)


def udp_count(addr, port, secs, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((addr, int(port)))
    seen = set()
    end = time.time() + float(secs)
    written = -1
    next_write = 0.0
    while time.time() < end:
        s.settimeout(0.2)
        try:
            _, src = s.recvfrom(2048)
            seen.add(src)
        except socket.timeout:
            pass
        # The count goes to OUT at most every 0.2 s (never per datagram).
        if len(seen) != written and time.time() >= next_write:
            with open(out, "w") as f:
                f.write("%d %s\n" % (len(seen), ",".join(sorted({ip for ip, _ in seen}))))
            written = len(seen)
            next_write = time.time() + 0.2


def udp_flows(n, first, dst, port):
    n, first, port = int(n), int(first), int(port)
    socks = []
    end = time.time() + 20
    for i in range(n):
        if time.time() > end:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", first + i))
        s.sendto(b"flow", (dst, port))
        socks.append(s)
        if len(socks) >= 800:
            # Keep the fd count bounded; the NAT keeps the sessions.
            for o in socks:
                o.close()
            socks = []
        if i % 100 == 99:
            time.sleep(0.01)
    time.sleep(2)
    print(n)


def echo_id(dst, ident, count, secs):
    ident, count = int(ident), int(count)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    got = 0
    for seq in range(count):
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        data = b"nsx-e2e-51" * 4
        pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + data), ident, seq) + data
        s.sendto(pkt, (dst, 0))
        end = time.time() + float(secs) / count
        while time.time() < end:
            s.settimeout(max(0.01, end - time.time()))
            try:
                b, _ = s.recvfrom(2048)
            except socket.timeout:
                break
            ihl = (b[0] & 15) * 4
            t, _, _, i, q = struct.unpack("!BBHHH", b[ihl:ihl + 8])
            if t == 0 and i == ident and q == seq:
                got += 1
                break
    print(got)


def tcp_connects(src, dst, port):
    """One TCP connect from SRC, bounded by 0.25 s: True if it connected."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.25)
    try:
        s.bind((src, 0))
        s.connect((dst, int(port)))
        return True
    except OSError:
        return False
    finally:
        s.close()


def tcp_wait(want, src, dst, port, secs):
    want_open = want == "open"
    end = time.time() + float(secs)
    run = []
    while time.time() < end:
        t0 = time.time()
        is_open = tcp_connects(src, dst, port)
        t1 = time.time()
        if is_open == want_open:
            run.append((t0, t1))
            if len(run) == 3:
                print("%d %d" % (run[0][0] * 1000, run[0][1] * 1000))
                return
        else:
            run = []
        time.sleep(0.02)
    print("never")


def tcp_closed(src, dst, port, secs):
    end = time.time() + float(secs)
    tried = 0
    while time.time() < end:
        tried += 1
        if tcp_connects(src, dst, port):
            print("open")
            return
        time.sleep(0.02)
    print(tried)


def udp_echo(addr, port, name, secs, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    end = time.time() + float(secs)
    with open(out, "a", buffering=1) as log:
        while time.time() < end:
            s.settimeout(max(0.05, end - time.time()))
            try:
                data, src = s.recvfrom(2048)
            except OSError:
                continue
            log.write("%s:%d\n" % src)
            s.sendto(name.encode() + b" " + data, src)


def tcp_echo(addr, port, name, secs, out):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(64)
    end = time.time() + float(secs)
    log = open(out, "a", buffering=1)

    def serve(c):
        c.settimeout(max(0.1, end - time.time()))
        f = c.makefile("rb")
        try:
            for line in f:
                c.sendall(name.encode() + b" " + line)
                if time.time() > end:
                    break
        except OSError:
            pass
        finally:
            c.close()

    while time.time() < end:
        srv.settimeout(max(0.05, end - time.time()))
        try:
            c, src = srv.accept()
        except OSError:
            continue
        log.write("%s:%d\n" % src)
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def udp_ask(dst, port, secs):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(float(secs))
    s.sendto(b"ask", (dst, int(port)))
    try:
        data, src = s.recvfrom(2048)
        print("%s:%d %s" % (src[0], src[1], data.decode(errors="replace")))
    except OSError:
        print("none")


def tcp_hold(dst, port, secs, out, src=None):
    end = time.time() + float(secs)
    n, name, result = 0, "-", "failed"
    try:
        bind = (src, 0) if src else None
        s = socket.create_connection((dst, int(port)), timeout=2, source_address=bind)
        s.settimeout(1)
        f = s.makefile("rb")
        while time.time() < end:
            s.sendall(b"line %d\n" % n)
            answer = f.readline().split()
            if not answer:
                break
            name = answer[0].decode()
            n += 1
            time.sleep(0.1)
        else:
            result = "ok"
        s.close()
    except OSError:
        pass
    with open(out, "w") as o:
        o.write("%s %d %s\n" % (name, n, result))


def http_serve(addr, port, directory, secs):
    import functools
    import http.server
    import socketserver

    class Server(http.server.ThreadingHTTPServer):
        def server_bind(self):
            # http.server asks DNS for the host's name here (getfqdn),
            # which can stall for seconds in a namespace without DNS.
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    srv = Server((addr, int(port)), handler)
    srv.timeout = 0.5
    end = time.time() + float(secs)
    while time.time() < end:
        srv.handle_request()
    srv.server_close()


CMDS = {
    "http-serve": http_serve,
    "udp-echo": udp_echo,
    "tcp-echo": tcp_echo,
    "tcp-hold": tcp_hold,
    "udp-ask": udp_ask,
    "udp-serve": udp_serve,
    "udp-from": udp_from,
    "udp-count": udp_count,
    "udp-flows": udp_flows,
    "echo-id": echo_id,
    "tcp-wait": tcp_wait,
    "tcp-closed": tcp_closed,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CMDS:
        sys.exit(__doc__)
    CMDS[sys.argv[1]](*sys.argv[2:])
