"""make soak: a mixed load on one Sallyport for a long while, sampled every 5 s.

Bulk CONNECTs (hashes compared), short connections, UDP associations, right and wrong passwords
(PAM through pam_wrapper), slowloris clients, and a SIGHUP every 10 s. Every 5 s it samples the
server's RSS, open descriptors, sessions opened and logged, and CPU into a CSV and a PNG plot. It
fails when a good session fails, when RSS or descriptors grow past a bound after the warm-up, or
when the access log's session lines differ from the sessions the clients opened.

    python3 soak.py SALLYPORT --seconds 600 --fixtures DIR --out DIR
"""
import argparse
import csv
import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

WARMUP = 60          # seconds before the bounds apply
RSS_BOUND_KIB = 32 * 1024
FD_BOUND = 64


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}

    def add(self, key, amount=1):
        with self.lock:
            self.values[key] = self.values.get(key, 0) + amount

    def get(self, key):
        with self.lock:
            return self.values.get(key, 0)


counters = Counters()
stop = threading.Event()


def serve_echo():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(256)

    def handle(conn):
        with conn:
            try:
                while data := conn.recv(262144):
                    conn.sendall(data)
            except OSError:
                pass

    def accept():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1]


def serve_udp_echo():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def loop():
        while True:
            data, peer = sock.recvfrom(65536)
            sock.sendto(data, peer)
    threading.Thread(target=loop, daemon=True).start()
    return sock.getsockname()[1]


def socks(port, source="127.0.0.1", user=None, password=None, timeout=15):
    """A connection to the proxy through the greeting (and RFC 1929 when a user is given)."""
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    counters.add("opened")
    if user is None:
        sock.sendall(b"\x05\x01\x00")
        assert recv_exactly(sock, 2) == b"\x05\x00"
    else:
        sock.sendall(b"\x05\x01\x02")
        assert recv_exactly(sock, 2) == b"\x05\x02"
        sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
        status = recv_exactly(sock, 2)
        if status != b"\x01\x00":
            sock.close()
            return None
    return sock


def recv_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"EOF after {len(data)} of {count}")
        data += chunk
    return data


def connect(sock, port):
    sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", port))
    reply = recv_exactly(sock, 10)
    return reply[1]


def worker(name, body, pause):
    while not stop.is_set():
        try:
            body()
            counters.add(name + "_ok")
        except Exception as error:  # every failure is counted and reported
            counters.add(name + "_failed")
            print(f"{name} failed: {error!r}", file=sys.stderr, flush=True)
        stop.wait(pause)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sallyport")
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--out", default="bench-results/soak")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    echo_port = serve_echo()
    udp_port = serve_udp_echo()
    work = tempfile.mkdtemp(prefix="sallyport-soak-")
    config = os.path.join(work, "soak.yaml")
    with open(config, "w") as f:
        f.write("""listen:
  - {address: "127.0.0.1:0", methods: [none]}
  - {address: "127.0.0.1:0", methods: [username]}
auth:
  pam: {service: sallyport-test}
  throttle: {max_failures: 5, window: 10s, backoff: 2s, max_backoff: 10s}
rules:
  - {name: loopback, action: allow, to: [127.0.0.0/8]}
timeouts: {negotiation: 5s}
state_dir: %s
""" % os.path.join(work, "state"))
    fixtures = args.fixtures
    env = dict(os.environ, LD_PRELOAD="libpam_wrapper.so libnss_wrapper.so", PAM_WRAPPER="1",
               PAM_WRAPPER_SERVICE_DIR=f"{fixtures}/services", NSS_WRAPPER_PASSWD=f"{fixtures}/passwd",
               NSS_WRAPPER_GROUP=f"{fixtures}/group")
    log_path = os.path.join(args.out, "server.log")
    log = open(log_path, "w")
    server = subprocess.Popen([args.sallyport, "--config", config], stderr=log, env=env)
    deadline = time.time() + 20
    ports = []
    while time.time() < deadline and not ports:
        time.sleep(0.2)
        for line in open(log_path):
            if "msg=listening" in line:
                ports = [int(a.rsplit(":", 1)[1]) for a in line.split("addresses=")[1].split()[0].split(",")]
    if len(ports) != 2:
        raise SystemExit("the server did not start")
    none_port, user_port = ports

    def bulk():
        data = os.urandom(4 << 20)
        with socks(none_port) as sock:
            assert connect(sock, echo_port) == 0
            reader_result = {}

            def read():
                got = hashlib.sha256()
                count = 0
                while count < len(data):
                    chunk = sock.recv(262144)
                    if not chunk:
                        break
                    got.update(chunk)
                    count += len(chunk)
                reader_result["hash"] = got.digest()
            reader = threading.Thread(target=read)
            reader.start()
            sock.sendall(data)
            reader.join(60)
            assert reader_result.get("hash") == hashlib.sha256(data).digest(), "bulk data corrupted"

    def short():
        with socks(none_port) as sock:
            assert connect(sock, echo_port) == 0
            sock.sendall(b"x" * 64)
            assert recv_exactly(sock, 64) == b"x" * 64

    def udp():
        with socks(none_port) as control:
            control.sendall(b"\x05\x03\x00\x01" + bytes(6))
            reply = recv_exactly(control, 10)
            assert reply[1] == 0, f"associate reply {reply[1]}"
            relay = (socket.inet_ntoa(reply[4:8]), struct.unpack(">H", reply[8:10])[0])
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(2)
            header = b"\x00\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", udp_port)
            answered = 0
            for index in range(50):
                sock.sendto(header + struct.pack(">I", index), relay)
                try:
                    if sock.recvfrom(2048)[0][10:] == struct.pack(">I", index):
                        answered += 1
                except socket.timeout:
                    pass
            sock.close()
            assert answered >= 45, f"only {answered} of 50 datagrams came back"

    def good_login():
        sock = socks(user_port, source="127.0.0.4", user=b"alice", password=b"wonderland")
        assert sock is not None, "right password refused"
        with sock:
            assert connect(sock, echo_port) == 0

    def wrong_login():
        sock = socks(user_port, source="127.0.0.3", user=b"bob", password=b"guess")
        assert sock is None, "wrong password accepted"

    def slowloris():
        sock = socket.socket()
        sock.settimeout(30)
        sock.connect(("127.0.0.1", none_port))
        counters.add("opened")
        started = time.time()
        try:
            for byte in b"\x05\x01\x00\x05\x01\x00\x01":
                sock.sendall(bytes([byte]))
                time.sleep(1)
            sock.recv(16)
            while sock.recv(16):
                pass
        except OSError:
            pass
        sock.close()
        assert time.time() - started < 15, "a slowloris client outlived the negotiation timeout"

    threads = [threading.Thread(target=worker, args=args_, daemon=True) for args_ in [
        ("bulk", bulk, 0.5), ("bulk", bulk, 0.5), ("short", short, 0.01), ("short", short, 0.01),
        ("udp", udp, 0.2), ("good_login", good_login, 0.1), ("wrong_login", wrong_login, 0.5),
        ("slowloris", slowloris, 0.5), ("slowloris", slowloris, 0.5),
    ]]
    for thread in threads:
        thread.start()

    samples = []
    start = time.time()
    last_cpu = None
    next_reload = start + 10
    next_sample = start
    with open(os.path.join(args.out, "soak.csv"), "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["seconds", "rss_kib", "fds", "sessions_opened", "sessions_logged", "cpu_s_per_s"])
        while time.time() - start < args.seconds:
            now = time.time()
            if now >= next_reload:
                server.send_signal(signal.SIGHUP)
                next_reload += 10
            if now >= next_sample:
                status = open(f"/proc/{server.pid}/status").read()
                rss = int(status.split("VmRSS:")[1].split()[0])
                fds = len(os.listdir(f"/proc/{server.pid}/fd"))
                stat = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
                cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
                rate = (cpu - last_cpu[0]) / (now - last_cpu[1]) if last_cpu else 0.0
                last_cpu = (cpu, now)
                logged = sum(1 for line in open(log_path) if "msg=session" in line)
                row = [round(now - start, 1), rss, fds, counters.get("opened"), logged, round(rate, 3)]
                samples.append(row)
                out.writerow(row)
                f.flush()
                next_sample += 5
            time.sleep(0.2)

    stop.set()
    for thread in threads:
        thread.join(60)
    time.sleep(7)  # negotiation timeouts and closes reach the log
    logged = sum(1 for line in open(log_path) if "msg=session" in line)
    opened = counters.get("opened")
    server.send_signal(signal.SIGTERM)
    server.wait(30)

    failures = []
    for name in ("bulk", "short", "udp", "good_login", "wrong_login", "slowloris"):
        if counters.get(name + "_failed"):
            failures.append(f"{counters.get(name + '_failed')} {name} sessions failed")
    steady = [row for row in samples if row[0] >= WARMUP]
    if steady:
        rss_growth = max(row[1] for row in steady) - steady[0][1]
        fd_growth = max(row[2] for row in steady) - steady[0][2]
        if rss_growth > RSS_BOUND_KIB:
            failures.append(f"RSS grew by {rss_growth} KiB after the warm-up (bound {RSS_BOUND_KIB})")
        if fd_growth > FD_BOUND:
            failures.append(f"descriptors grew by {fd_growth} after the warm-up (bound {FD_BOUND})")
    else:
        rss_growth = fd_growth = None
    if logged != opened:
        failures.append(f"the access log has {logged} session lines for {opened} sessions opened")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        seconds = [row[0] for row in samples]
        figure, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
        for axis, column, label in zip(axes, (1, 2, 3, 5), ("RSS (KiB)", "open descriptors", "sessions opened", "CPU-s per s")):
            axis.plot(seconds, [row[column] for row in samples])
            axis.set_ylabel(label)
            axis.axvline(WARMUP, color="grey", linestyle=":")
        axes[-1].set_xlabel("seconds")
        figure.suptitle(f"Sallyport soak, {args.seconds} s")
        figure.tight_layout()
        figure.savefig(os.path.join(args.out, "soak.png"))
    except ImportError:
        failures.append("matplotlib is missing: no plot")

    summary = {name: counters.get(name) for name in sorted(counters.values)}
    print(f"soak: {args.seconds} s, sessions opened {opened}, logged {logged}, RSS growth after warm-up "
          f"{rss_growth} KiB, descriptor growth {fd_growth}; {summary}")
    print(f"CSV and plot in {args.out}")
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("passed")


if __name__ == "__main__":
    main()
