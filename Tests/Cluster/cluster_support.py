"""The parts of the cluster test: Sallyport instances, HAProxy, echo servers, SOCKS5 clients and a
load generator. Everything runs inside the test's network namespace; every wait is bounded."""

import os
import signal
import socket
import socketserver
import struct
import subprocess
import threading
import time
import ctypes

# PR_SET_PDEATHSIG (1) with SIGKILL (9), called in the child between fork and exec: what this script
# starts dies with it, even when it is killed. libc is loaded here, not in the child.
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """preexec_fn: SIGKILL when the parent ends, so a killed test leaves nothing running."""
    _LIBC.prctl(1, 9, 0, 0, 0)


def wait_for(condition, timeout, interval=0.02):
    """Polls `condition` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


class Instance:
    """One Sallyport instance: its own loopback address (a machine of the cluster), a SOCKS listener
    that expects PROXY v2 from the balancer only, and an admin listener for health checks."""

    def __init__(self, sallyport, work, index, balancer, denied):
        self.sallyport, self.balancer = sallyport, balancer
        self.name, self.address = f"s{index}", f"127.0.1.{index}"
        self.config = os.path.join(work, f"{self.name}.yaml")
        self.log = os.path.join(work, f"{self.name}.log")
        self.process, self.starts = None, 0
        self.write_config(denied)

    def write_config(self, denied):
        blocks = ", ".join(f"{address}/32" for address in denied)
        text = f"""listen:
  - address: {self.address}:1080
    proxy_protocol: v2
    trusted_proxies: [{self.balancer}/32]
methods: [none]
# Behind the balancer, method none serves whoever it lets in: the test's own clients.
allow_unauthenticated_remote: true
clients:
  - action: deny
    from: [{blocks}]
  - action: allow
    from: [127.0.0.0/8]
rules:
  - name: cluster-echo
    action: allow
    to: [127.0.0.1/32]
    ports: [7000]
udp:
  advertise: {self.address}
admin:
  listen: {self.address}:9180
timeouts:
  shutdown_grace: 10s
  shutdown_delay: 2s
"""
        # Whole or not at all: a reload never reads half a file.
        with open(self.config + ".new", "w") as out:
            out.write(text)
        os.replace(self.config + ".new", self.config)

    def start(self):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([self.sallyport, "--config", self.config], stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
                                            stdout=subprocess.DEVNULL, stderr=log)
        self.starts += 1
        if not wait_for(lambda: self.count("msg=listening") >= self.starts, 20):
            raise RuntimeError(f"{self.name} did not start: see {self.log}")

    def signal(self, number):
        self.process.send_signal(number)

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def wait_exit(self, timeout):
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def lines(self):
        with open(self.log, errors="replace") as log:
            return log.read().splitlines()

    def count(self, *parts):
        return sum(1 for line in self.lines() if all(part in line for part in parts))

    def session_clients(self):
        """The client= field of every access-log line of a relayed session."""
        clients = []
        for line in self.lines():
            if " msg=session " in line and "end=client_denied" not in line:
                fields = dict(field.split("=", 1) for field in line.split(" ") if "=" in field)
                clients.append(fields.get("client", "?"))
        return clients


class HAProxy:
    """HAProxy in TCP mode with send-proxy-v2 and HTTP health checks on each instance's /readyz."""

    def __init__(self, work, bind, instances):
        self.socket_path = os.path.join(work, "haproxy.sock")
        self.config = os.path.join(work, "haproxy.cfg")
        self.log = os.path.join(work, "haproxy.log")
        servers = "\n".join(f"    server {i.name} {i.address}:1080 port 9180" for i in instances)
        with open(self.config, "w") as out:
            out.write(f"""global
    maxconn 4096
    stats socket {self.socket_path} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 1m
    timeout server 1m
    timeout check 1s
    retries 3
    option redispatch 1

listen socks
    bind {bind[0]}:{bind[1]}
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server send-proxy-v2 check inter 500ms fastinter 250ms downinter 1s fall 2 rise 2
{servers}
""")
        self.process = None

    def start(self):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(["haproxy", "-db", "-f", self.config], stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, stdout=log, stderr=log)
        if not wait_for(lambda: os.path.exists(self.socket_path) and self.stats(), 20):
            raise RuntimeError(f"haproxy did not start: see {self.log}")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stats(self):
        """`show stat` of the servers, as one dict of fields per server name ([] when unreachable)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(self.socket_path)
                sock.sendall(b"show stat\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
        except OSError:
            return []
        lines = data.decode(errors="replace").splitlines()
        if not lines or not lines[0].startswith("# "):
            return []
        header = lines[0][2:].split(",")
        rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
        return [row for row in rows if row.get("pxname") == "socks" and row.get("svname") not in ("FRONTEND", "BACKEND")]

    def states(self):
        return {row["svname"]: row["status"] for row in self.stats()}

    def checks_down(self):
        """How many times each server went from UP to DOWN."""
        return {row["svname"]: int(row.get("chkdown") or 0) for row in self.stats()}


class TCPEcho:
    def __init__(self, address):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.settimeout(120)
                try:
                    while data := self.request.recv(65536):
                        self.request.sendall(data)
                except OSError:
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer.daemon_threads = True
        self.server = socketserver.ThreadingTCPServer(address, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class UDPEcho:
    def __init__(self, address):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while self.running:
            try:
                data, peer = self.sock.recvfrom(65536)
                self.sock.sendto(data, peer)
            except (socket.timeout, OSError):
                continue

    def stop(self):
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()


def receive(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def connect_request(command, address):
    return bytes([5, command, 0, 1]) + socket.inet_aton(address[0]) + struct.pack(">H", address[1])


class Held:
    """A CONNECT session kept open."""

    def __init__(self, sock):
        self.sock = sock

    def echo(self):
        try:
            payload = os.urandom(32)
            self.sock.sendall(payload)
            return receive(self.sock, len(payload)) == payload
        except OSError:
            return False

    def close(self):
        self.sock.close()


def session(balancer, echo, source, hold=False):
    """A CONNECT through the balancer to the echo server from `source`, with a round trip of random
    bytes: the client's "ip:port", or a Held session. Raises when anything goes wrong."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(balancer)
        local = "%s:%d" % sock.getsockname()
        payload = os.urandom(64)
        sock.sendall(b"\x05\x01\x00" + connect_request(1, echo) + payload)
        if receive(sock, 2) != b"\x05\x00":
            raise ConnectionError("method refused")
        reply = receive(sock, 10)
        if reply[1] != 0:
            raise ConnectionError(f"reply {reply[1]}")
        if receive(sock, len(payload)) != payload:
            raise ConnectionError("echo differs")
        if hold:
            return Held(sock)
        sock.close()
        return local
    except BaseException:
        sock.close()
        raise


def deny_session(balancer, echo, source):
    """A session from a client the instances deny: its port when it was closed without a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(balancer)
        port = sock.getsockname()[1]
        try:
            sock.sendall(b"\x05\x01\x00" + connect_request(1, echo))
            return port if sock.recv(1) == b"" else None
        except ConnectionResetError:
            return port
        except OSError:
            return None


def udp_round_trip(balancer, echo, source):
    """A UDP ASSOCIATE through the balancer and one datagram through the instance it reached:
    (the relay's address from the reply, whether the datagram came back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as control, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        control.settimeout(10)
        control.bind((source, 0))
        control.connect(balancer)
        udp.bind((source, 0))
        udp.settimeout(5)
        control.sendall(b"\x05\x01\x00" + connect_request(3, udp.getsockname()))
        if receive(control, 2) != b"\x05\x00":
            return (None, False)
        reply = receive(control, 10)
        if reply[1] != 0 or reply[3] != 1:
            return (None, False)
        relay = (socket.inet_ntoa(reply[4:8]), struct.unpack(">H", reply[8:10])[0])
        payload = os.urandom(48)
        header = b"\x00\x00\x00\x01" + socket.inet_aton(echo[0]) + struct.pack(">H", echo[1])
        udp.sendto(header + payload, relay)
        try:
            data, _ = udp.recvfrom(65536)
        except socket.timeout:
            return (relay[0], False)
        return (relay[0], data == header + payload)


class Result:
    __slots__ = ("started", "ended", "ok", "client", "error")

    def __init__(self, started, ended, ok, client, error=None):
        self.started, self.ended, self.ok, self.client, self.error = started, ended, ok, client, error


class Load:
    """Sessions back to back from `threads` threads, spread over the client addresses."""

    def __init__(self, balancer, echo, clients, threads):
        self.balancer, self.echo, self.clients, self.count = balancer, echo, clients, threads
        self.results, self.lock = [], threading.Lock()
        self.running, self.limit, self.issued, self.threads = False, 100_000, 0, []

    def worker(self, index):
        for n in range(self.limit):
            with self.lock:
                if not self.running or self.issued >= self.limit:
                    return
                self.issued += 1
            source = self.clients[(index + n * self.count) % len(self.clients)]
            started = time.monotonic()
            try:
                client, ok, error = session(self.balancer, self.echo, source), True, None
            except OSError as failure:
                client, ok, error = None, False, repr(failure)
            with self.lock:
                self.results.append(Result(started, time.monotonic(), ok, client, error))

    def errors(self):
        return sorted({r.error for r in self.results if not r.ok})

    def start(self, limit=100_000):
        self.running, self.limit, self.issued = True, limit, 0
        self.threads = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(self.count)]
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.running = False
        for thread in self.threads:
            thread.join(timeout=30)

    def run_count(self, total):
        """Exactly `total` sessions; (the clients of those that succeeded, how many failed)."""
        self.start(limit=total)
        for thread in self.threads:
            thread.join(timeout=120)
        self.running = False
        return Finished([r.client for r in self.results if r.ok], sum(1 for r in self.results if not r.ok))


class Finished:
    def __init__(self, ok, failed):
        self.ok, self.failed = ok, failed
