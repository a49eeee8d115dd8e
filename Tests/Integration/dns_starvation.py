"""Runs inside a network namespace whose resolv.conf names a DNS server that never answers (this
script is that server) and whose hosts file names target.test. Starts Sallyport there, floods it
from 127.0.0.1 with lookups of names that never resolve, and times a CONNECT by name from
127.0.0.2 meanwhile. Prints one JSON line; the Swift test judges it.

    ip netns exec NS python3 dns_starvation.py SALLYPORT_BINARY udp|connect DNS_TIMEOUT_SECONDS
"""
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import ctypes

# PR_SET_PDEATHSIG (1) with SIGKILL (9), called in the child between fork and exec: what this script
# starts dies with it, even when it is killed. libc is loaded here, not in the child.
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """preexec_fn: SIGKILL when the parent ends, so a killed test leaves nothing running."""
    _LIBC.prctl(1, 9, 0, 0, 0)


SALLYPORT, PHASE, DNS_TIMEOUT = sys.argv[1], sys.argv[2], float(sys.argv[3])
FLOOD_DATAGRAMS = 1000
FLOOD_CONNECTS = 200


def black_hole():
    """Port 53 on the namespace's loopback: reads every query, answers none."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    counter = {"queries": 0}

    def drain():
        while True:
            sock.recv(4096)
            counter["queries"] += 1
    threading.Thread(target=drain, daemon=True).start()
    return counter


def echo_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)

    def serve(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1]


def start_sallyport():
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(f"""listen: [127.0.0.1:0]
rules:
  - {{name: namespace-loopback, action: allow, to: [127.0.0.0/8]}}
  - {{name: public, action: allow, to: ["*"]}}
timeouts:
  dns: {DNS_TIMEOUT}s
  connect: 10s
""")
    config.close()
    process = subprocess.Popen([SALLYPORT, "--config", config.name], stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if "msg=listening" in line:
            port = int(line.split("addresses=")[1].split()[0].rsplit(":", 1)[1])
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, port
        if not line and process.poll() is not None:
            break
    raise SystemExit(f"sallyport did not start: {process.poll()}")


def socks_connect_bytes(name, port):
    host = name.encode()
    return b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack(">H", port)


def timed_connect(proxy_port, name, port, source):
    """A CONNECT by name from `source`; returns (reply code, seconds to the reply, echo worked)."""
    start = time.monotonic()
    with socket.socket() as sock:
        sock.settimeout(15)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", proxy_port))
        sock.sendall(socks_connect_bytes(name, port))
        reply = b""
        try:
            while len(reply) < 12:
                chunk = sock.recv(12 - len(reply))
                if not chunk:
                    break
                reply += chunk
        except socket.timeout:
            return None, time.monotonic() - start, False
        elapsed = time.monotonic() - start
        if len(reply) < 4:
            return None, elapsed, False
        code = reply[3]
        echoed = False
        if code == 0:
            sock.sendall(b"ping")
            echoed = sock.recv(4) == b"ping"
        return code, elapsed, echoed


def flood_udp(proxy_port):
    control = socket.socket()
    control.connect(("127.0.0.1", proxy_port))
    control.sendall(b"\x05\x01\x00" + b"\x05\x03\x00\x01" + bytes(4) + bytes(2))
    reply = control.recv(2) + control.recv(10)
    assert reply[3] == 0, f"associate refused: {reply!r}"
    relay = (socket.inet_ntoa(reply[6:10]), struct.unpack(">H", reply[10:12])[0])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(FLOOD_DATAGRAMS):
        name = f"u{i}.black-hole.test".encode()
        udp.sendto(b"\x00\x00\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", 9) + b"x", relay)
    return control, udp


def flood_connects(proxy_port):
    """200 CONNECTs to names that never resolve, all sent at once; returns their sockets and start times."""
    socks = []
    for i in range(FLOOD_CONNECTS):
        sock = socket.socket()
        sock.connect(("127.0.0.1", proxy_port))
        sock.sendall(socks_connect_bytes(f"c{i}.black-hole.test", 80))
        socks.append((sock, time.monotonic()))
    return socks


def collect(socks, timeout):
    """Each flooding CONNECT's reply code and how long it took, waiting up to `timeout` in all."""
    results = {}
    pending = {sock.fileno(): (sock, start) for sock, start in socks}
    buffers = {fd: b"" for fd in pending}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        readable, _, _ = select.select(list(pending), [], [], max(0.0, deadline - time.monotonic()))
        for fd in readable:
            sock, start = pending[fd]
            chunk = sock.recv(64)
            buffers[fd] += chunk
            if len(buffers[fd]) >= 4 or not chunk:
                data = buffers[fd]
                results[fd] = (data[3] if len(data) >= 4 else None, time.monotonic() - start)
                del pending[fd]
    for fd in pending:
        results[fd] = (None, None)
    for sock, _ in socks:
        sock.close()
    return list(results.values())


def main():
    dns = black_hole()
    echo_port = echo_server()
    process, proxy_port = start_sallyport()
    result = {"phase": PHASE}
    try:
        run_phase(result, dns, echo_port, process, proxy_port)
    except Exception:
        # Said in the result, so that the test shows what went wrong.
        result["error"] = traceback.format_exc()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            result["server_stop_seconds"] = "over 10"
            process.kill()
            process.wait()
    print(json.dumps(result))


def run_phase(result, dns, echo_port, process, proxy_port):
    if PHASE == "udp":
        control, udp = flood_udp(proxy_port)
        time.sleep(0.3)  # the flood's lookups are queued or running by now
        code, elapsed, echoed = timed_connect(proxy_port, "target.test", echo_port, "127.0.0.2")
        result.update(code=code, seconds=elapsed, echoed=echoed)
        control.close()
    else:
        socks = flood_connects(proxy_port)
        time.sleep(0.3)
        code, elapsed, echoed = timed_connect(proxy_port, "target.test", echo_port, "127.0.0.2")
        result.update(code=code, seconds=elapsed, echoed=echoed)
        flood = collect(socks, DNS_TIMEOUT + 5)
        result["flood_codes"] = sorted({str(c) for c, _ in flood})
        result["flood_slowest"] = max((s for _, s in flood if s is not None), default=None)
        result["flood_unanswered"] = sum(1 for c, _ in flood if c is None)
    result["dns_queries"] = dns["queries"]
    result["server_alive"] = process.poll() is None


if __name__ == "__main__":
    main()
