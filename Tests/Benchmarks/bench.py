#!/usr/bin/env python3
"""Sallyport's benchmark: Sallyport against microsocks and Dante, and a direct connection, measured in
one run with one load generator (sallyport-bench), on loopback only.

Usage: Tests/Benchmarks/bench.py BIN_DIR [--seconds S] [--rounds R] [--sessions N] [--json PATH] [--only NAMES]
Prints one table (each figure with its ratio to the best peer; throughput figures are medians over
R rounds in which every proxy runs each scenario back to back) and writes JSON.
"""
import argparse, json, os, platform, resource, shutil, signal, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICKS = os.sysconf("SC_CLK_TCK")
# The proxies listen here, the load generator's targets on 127.0.0.2: connection-rate runs leave
# tens of thousands of TIME_WAIT sockets on 127.0.0.1, which would leave no port to bind there.
PROXY_HOST = "127.0.0.3"


def free_port():
    with socket.socket() as s:
        s.bind((PROXY_HOST, 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((PROXY_HOST, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def tree(pid):
    """The PID and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except OSError:
                pass
    result, todo = [], [pid]
    while todo:
        p = todo.pop()
        result.append(p)
        todo.extend(children.get(p, []))
    return result


def cpu_seconds(pid):
    """(user, system) seconds of the process tree, its reaped children included."""
    user = system = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
            if p == pid:
                user += int(fields[13])
                system += int(fields[14])
        except OSError:
            pass
    return user / TICKS, system / TICKS


def children_cpu_seconds():
    """(user, system) seconds of this script's reaped children: the load generator's runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def pss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def raise_limits():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Proxy:
    """A proxy under test. `make_argv(port)` writes its configuration and returns its command line;
    the port is picked just before it starts, so that nothing else takes it meanwhile."""
    def __init__(self, name, make_argv, env=None, udp=True, user=None, password=None, log=None, memory=True, connections_only=False):
        self.name, self.make_argv, self.env, self.udp, self.memory = name, make_argv, env, udp, memory
        self.user, self.password, self.log = user, password, log
        self.connections_only = connections_only
        # Proxies whose CPU this one's figures include (an upstream it goes through), and whether
        # it is measured itself (an upstream is not, on its own). A TLS client in front (stunnel in
        # client mode, standing for the client's own TLS) is not counted: counts_self False.
        self.also_counts, self.measured, self.counts_self = [], True, True
        self.started_s = None
        self.process = None
        self.argv = None
        self.port = 0

    def start(self):
        if self.make_argv is None:
            return
        self.port = free_port()
        self.argv = self.make_argv(self.port)
        environment = dict(os.environ)
        environment.update(self.env or {})
        out = open(self.log, "w") if self.log else subprocess.DEVNULL
        began = time.monotonic()
        self.process = subprocess.Popen(self.argv, env=environment, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                        preexec_fn=raise_limits)
        if not wait_port(self.port, timeout=60):
            raise SystemExit(f"{self.name} did not start: {self.argv}")
        self.started_s = time.monotonic() - began
        time.sleep(0.3)

    def stop(self):
        if self.process and self.process.poll() is None:
            for p in reversed(tree(self.process.pid)):
                try:
                    os.kill(p, signal.SIGTERM)
                except OSError:
                    pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            time.sleep(0.5)

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def proxy_args(self):
        return [] if self.make_argv is None else ["--proxy", f"{PROXY_HOST}:{self.port}"]


class ScenarioFailed(Exception):
    """A scenario gave no result (a peer refused or broke it): that figure is marked failed."""


def run_json(argv, timeout=120):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, preexec_fn=raise_limits)
    except subprocess.TimeoutExpired:
        raise ScenarioFailed(f"no result within {timeout} s")
    for line in reversed(out.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ScenarioFailed((out.stdout + " " + out.stderr).strip()[-200:] or f"exit {out.returncode}")


def measured(proxy, argv):
    """Runs a scenario; returns its result with the proxy's CPU seconds during it (user and system
    apart) and the load generator's own (it holds the echo target and the sink too)."""
    def proxy_cpu():
        # A proxy with an upstream hop counts both proxies.
        parts = [cpu_seconds(p) for p in ([proxy.pid] if proxy.counts_self else []) + [other.pid for other in proxy.also_counts]]
        return sum(part[0] for part in parts), sum(part[1] for part in parts)
    before = proxy_cpu() if proxy.pid else None
    generator_before = children_cpu_seconds()
    result = run_json(argv)
    generator_after = children_cpu_seconds()
    if before is not None:
        after = proxy_cpu()
        result["cpu_user_s"] = after[0] - before[0]
        result["cpu_sys_s"] = after[1] - before[1]
        result["cpu_s"] = result["cpu_user_s"] + result["cpu_sys_s"]
    else:
        result["cpu_s"] = None
    result["generator_cpu_s"] = (generator_after[0] - generator_before[0]) + (generator_after[1] - generator_before[1])
    result["generator_sys_s"] = generator_after[1] - generator_before[1]
    return result


def idle_sessions(bench, proxy, sessions, warm_bytes=1):
    rest = pss_kib(proxy.pid)
    p = subprocess.Popen([bench, "idle", "--sessions", str(sessions), "--warm-bytes", str(warm_bytes)] + proxy.proxy_args(), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, preexec_fn=raise_limits)
    opened = json.loads(p.stdout.readline())
    time.sleep(1)
    loaded = pss_kib(proxy.pid)
    p.stdin.write("\n"); p.stdin.flush()
    json.loads(p.stdout.readline())
    time.sleep(7)  # what each proxy gives back within a few seconds of the sessions closing
    after = pss_kib(proxy.pid)
    p.stdin.write("\n"); p.stdin.flush()
    p.wait(timeout=30)
    # A run that could not open (nearly) all its sessions says nothing per session.
    valid = opened["open"] >= 0.9 * sessions
    return {"open": opened["open"], "failures": opened.get("failures"), "rest_kib": rest, "loaded_kib": loaded,
            "after_close_kib": after, "returned_kib": loaded - after,
            "kib_per_session": round((loaded - rest) / opened["open"], 2) if valid else None}


def sallyport_argv(sallyport, path, port, methods="none", extra="", uncapped=True):
    """Writes a Sallyport configuration to `path` (listening on PROXY_HOST:port, loopback targets
    allowed, which the embedded default refuses) and returns the command line."""
    with open(path, "w") as f:
        # With logins, usage totals of its own, never /var/lib/sallyport (a build older than usage
        # totals, run with --compare and method none, would not know the key).
        state = f"state_dir: {path}.state\n" if methods != "none" else ""
        # One load generator stands for every client: no per-client connection cap (the peers have
        # none), so that 5,000 idle sessions from one address are measured, not refused. (Not for
        # --compare: a build from before the cap has none and does not know the key.)
        f.write(f"listen:\n  - address: {PROXY_HOST}:{port}\n    methods: [{methods}]\n"
                f"rules:\n  - name: bench-loopback\n    action: allow\n    to: [127.0.0.0/8]\n"
                f"{'limits: {connections_per_client: 0}' if uncapped else ''}\n{state}{extra}")
    return [sallyport, "--config", path]


def dante_argv(work, port):
    """Writes Dante's configuration (no auth, loopback clients, CONNECT and UDP) into `work`."""
    dante_conf = os.path.join(work, "danted.conf")
    with open(dante_conf, "w") as f:
        f.write(f"""logoutput: {os.path.join(work, 'danted.log')}
internal: {PROXY_HOST} port = {port}
external: 127.0.0.1
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect udpassociate udpreply }}
""")
    return [shutil.which("danted") or "/usr/sbin/danted", "-f", dante_conf]


def tls_proxies(work, sallyport, dante):
    """SOCKS5 inside TLS, two ways: Sallyport's own TLS listener, and stunnel in front of Dante (the
    usual way to give Dante TLS). The load generator speaks plain SOCKS5, so each gets a stunnel in
    client mode in front, standing for the client's TLS; its CPU is not counted. Counted: Sallyport;
    Dante and its stunnel."""
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel") or "/usr/bin/stunnel4"
    cert, key = os.path.join(work, "tls.pem"), os.path.join(work, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(key, 0o600)

    def stunnel_proxy(name, service):
        def make_argv(port):
            config = os.path.join(work, f"{name}.conf")
            with open(config, "w") as f:
                f.write(f"foreground = yes\npid =\nsyslog = no\noutput = {os.path.join(work, name + '.log')}\n"
                        f"[{name}]\naccept = {PROXY_HOST}:{port}\n{service()}")
            return [stunnel, config]
        return Proxy(name, make_argv, udp=False, memory=False)

    dante_server = stunnel_proxy("stunnel-dante", lambda: f"connect = {PROXY_HOST}:{dante.port}\ncert = {cert}\nkey = {key}\n")
    dante_server.measured = False
    dante_tls = stunnel_proxy("dante-tls", lambda: f"client = yes\nconnect = {PROXY_HOST}:{dante_server.port}\n")
    dante_tls.also_counts, dante_tls.counts_self = [dante, dante_server], False

    sallyport_server = Proxy("sallyport-tls-server", lambda port: sallyport_argv_tls(
        sallyport, os.path.join(work, "sallyport-tls-server.yaml"), port, cert, key), udp=False, memory=False,
        log=os.path.join(work, "sallyport-tls-server.log"))
    sallyport_server.measured = False
    sallyport_tls = stunnel_proxy("sallyport-tls", lambda: f"client = yes\nconnect = {PROXY_HOST}:{sallyport_server.port}\n")
    sallyport_tls.also_counts, sallyport_tls.counts_self = [sallyport_server], False
    return [dante_server, dante_tls, sallyport_server, sallyport_tls]


def sallyport_argv_tls(sallyport, path, port, cert, key):
    """A Sallyport TLS listener (method none on loopback) with the bench's certificate."""
    with open(path, "w") as f:
        f.write(f"listen:\n  - address: {PROXY_HOST}:{port}\n    methods: [none]\n    tls: {{certificate: {cert}, key: {key}}}\n"
                f"rules:\n  - name: bench-loopback\n    action: allow\n    to: [127.0.0.0/8]\n"
                f"limits: {{connections_per_client: 0}}\n")
    return [sallyport, "--config", path]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench-results", "latest.json"))
    parser.add_argument("--only", default="")
    parser.add_argument("--blocklists", type=int, default=1, help="0 leaves out the blocklist proxies (1, 10,000 and 1,000,000 entries)")
    parser.add_argument("--routes", type=int, default=1, help="0 leaves out the egress-address and upstream-hop proxies")
    parser.add_argument("--tls", type=int, default=1, help="0 leaves out the TLS proxies (Sallyport's TLS listener, stunnel in front of Dante)")
    parser.add_argument("--compare", default="",
                        help="a directory holding another build's sallyport, measured in the same run as 'sallyport-compare'")
    args = parser.parse_args()
    bench = os.path.join(args.bin, "sallyport-bench")
    sallyport = os.path.join(args.bin, "sallyport")
    work = tempfile.mkdtemp(prefix="sallyport-bench-")
    fixtures = os.path.join(ROOT, ".build", "pam-fixtures")
    subprocess.run([os.path.join(ROOT, "Tests", "Fixtures", "make-pam-fixtures.sh"), fixtures], check=True, stdout=subprocess.DEVNULL)

    def sallyport_proxy(name, methods, extra="", env=None, user=None, password=None):
        def make_argv(port):
            return sallyport_argv(sallyport, os.path.join(work, f"{name}.yaml"), port, methods, extra)
        return Proxy(name, make_argv, env=env, user=user, password=password, log=os.path.join(work, f"{name}.log"))

    pam_env = {"LD_PRELOAD": "libpam_wrapper.so libnss_wrapper.so", "PAM_WRAPPER": "1",
               "PAM_WRAPPER_SERVICE_DIR": f"{fixtures}/services", "NSS_WRAPPER_PASSWD": f"{fixtures}/passwd",
               "NSS_WRAPPER_GROUP": f"{fixtures}/group"}
    pam_extra = "auth:\n  pam: {service: sallyport-test, threads: 4, max_pending: 1024}\n  throttle: {max_failures: 0}\n"
    users_file = os.path.join(work, "users")
    subprocess.run([sallyport, "passwd", "alice", "--file", users_file], input=b"wonderland\n", check=True,
                   stdout=subprocess.DEVNULL, env=dict(os.environ, LD_PRELOAD=""))
    file_extra = f"auth:\n  file: {users_file}\n  pam: {{threads: 4, max_pending: 1024}}\n  throttle: {{max_failures: 0}}\n"
    proxies = [
        Proxy("direct", None),
        Proxy("microsocks", lambda port: [shutil.which("microsocks") or "/usr/bin/microsocks", "-i", PROXY_HOST, "-p", str(port)],
              udp=False),
        Proxy("dante", lambda port: dante_argv(work, port)),
        sallyport_proxy("sallyport", "none"),
        sallyport_proxy("sallyport-pam", "username", pam_extra, env=pam_env,
                        user="alice", password="wonderland"),
        # The same without the credential cache: every connection is a whole PAM transaction
        # (pam_matrix), so its connections/s are PAM logins per second.
        sallyport_proxy("pam-no-cache", "username", pam_extra + "  cache_ttl: 0\n", env=pam_env,
                        user="alice", password="wonderland"),
        # Accounts from a user file (a yescrypt hash written by this build's `sallyport passwd`):
        # with the credential cache, and without it (every connection one hash: logins per second).
        sallyport_proxy("sallyport-file", "username", file_extra, user="alice", password="wonderland"),
        sallyport_proxy("file-no-cache", "username", file_extra + "  cache_ttl: 0\n", user="alice", password="wonderland"),
        # A yardstick, not a peer: the least a SwiftNIO SOCKS5 relay does (sallyport-bench
        # floor-proxy), to show what NIO itself costs per connection.
        Proxy("nio-floor", lambda port: [bench, "floor-proxy", "--listen", f"{PROXY_HOST}:{port}"], udp=False, memory=False),
    ]
    # Blocklists: a deny rule with a to_file list of N entries ahead of the loopback rule, so that
    # every connection's decision goes through it (connections only: the relay is the same).
    def blocklist_proxy(entries):
        path = os.path.join(work, f"blocklist-{entries}.list")
        with open(path, "w") as f:
            for i in range(entries):
                kind = i % 4
                if kind < 2:
                    f.write(f"h{i}.ads.example\n")
                elif kind == 2:
                    f.write(f".z{i}.tracker.test\n")
                else:
                    f.write(f"{11 + (i >> 16) % 100}.{(i >> 8) & 255}.{i & 255}.0/24\n")
        extra_rule = f"  - name: blocklist\n    action: deny\n    to_file: {path}\n"
        def make_argv(port):
            config = os.path.join(work, f"blocklist-{entries}.yaml")
            with open(config, "w") as f:
                f.write(f"listen:\n  - address: {PROXY_HOST}:{port}\n    methods: [none]\n"
                        f"rules:\n{extra_rule}  - name: bench-loopback\n    action: allow\n    to: [127.0.0.0/8]\n")
            return [sallyport, "--config", config]
        return Proxy(f"blocklist-{entries}", make_argv, log=os.path.join(work, f"blocklist-{entries}.log"), memory=False,
                     connections_only=True)
    if args.blocklists:
        proxies += [blocklist_proxy(n) for n in (1, 10_000, 1_000_000)]
    if args.routes:
        # An egress address (the loopback target's own source, bound explicitly), and a hop
        # through a second Sallyport (both proxies' CPU counted).
        proxies.append(Proxy("egress-address", lambda port: sallyport_argv(
            sallyport, os.path.join(work, "egress.yaml"), port, "none", "egress: {address: 127.0.0.1}\n"),
            log=os.path.join(work, "egress.log"), memory=False, connections_only=True))
        upstream = sallyport_proxy("upstream", "none")
        upstream.measured, upstream.memory, upstream.connections_only = False, False, True
        def via_argv(port):
            config = os.path.join(work, "via.yaml")
            with open(config, "w") as f:
                f.write(f"listen:\n  - address: {PROXY_HOST}:{port}\n    methods: [none]\n"
                        f"rules:\n  - name: via-upstream\n    action: allow\n    to: [127.0.0.0/8]\n"
                        f"    via: socks5://{PROXY_HOST}:{upstream.port}\n")
            return [sallyport, "--config", config]
        via = Proxy("upstream-hop", via_argv, log=os.path.join(work, "via.log"), memory=False, connections_only=True)
        via.also_counts = [upstream]
        proxies += [upstream, via]
    if args.tls:
        proxies += tls_proxies(work, sallyport, next(p for p in proxies if p.name == "dante"))
    if args.compare:
        # Another build (an earlier commit, say) side by side with this one, in the same rounds.
        compare = os.path.join(args.compare, "sallyport")
        proxies.append(Proxy("sallyport-compare", lambda port: sallyport_argv(compare, os.path.join(work, "compare.yaml"), port, uncapped=False),
                             log=os.path.join(work, "compare.log")))
    if args.only:
        chosen = [p for p in proxies if p.name in args.only.split(",")]
        # An upstream goes with the proxy that goes through it, started first.
        needed = [other for p in chosen for other in p.also_counts if other not in chosen]
        proxies = needed + chosen
    results = {proxy.name: {"runs": []} for proxy in proxies if proxy.measured}
    s = str(args.seconds)
    try:
        # Memory first, each proxy on a fresh process: what earlier runs left in the allocator
        # would otherwise be reused and hide what a session costs.
        for proxy in proxies:
            if proxy.make_argv is None or proxy.user is not None or not proxy.memory:
                continue
            for key, sessions, warm in (("idle", args.sessions, 1), ("idle_warm", 1000, 1 << 20)):
                # Sessions that moved some data first (idle_warm), as a browser's keep-alive
                # connections have.
                proxy.start()
                try:
                    results[proxy.name][key] = idle_sessions(bench, proxy, sessions, warm_bytes=warm)
                except (ValueError, OSError, subprocess.TimeoutExpired) as failure:
                    print(f"{key} via {proxy.name} failed: {failure}", file=sys.stderr)
                    results[proxy.name].setdefault("failed", []).append(f"{key}: {failure}")
                proxy.stop()
            print(f"memory measured: {proxy.name}", file=sys.stderr)

        # Then every proxy at once (idle ones cost nothing), and each scenario run on all of them
        # back to back, in rounds with the order rotated: this machine's speed drifts over minutes,
        # and a peer measured minutes after another would be compared with a different machine.
        for proxy in proxies:
            proxy.start()
            if proxy.connections_only and proxy.measured:
                # Its load time (start to listening) and resident memory with its list loaded.
                results[proxy.name]["startup_s"] = proxy.started_s
                results[proxy.name]["pss_kib"] = pss_kib(proxy.pid)
        scenarios = [
            ("bulk1", lambda p, c: [bench, "bulk", "--streams", "1", "--seconds", s] if p.user is None and not p.connections_only else None),
            ("bulk4", lambda p, c: [bench, "bulk", "--streams", "4", "--seconds", s] if p.user is None and not p.connections_only else None),
            ("connections", lambda p, c: [bench, "connections", "--workers", str(args.workers), "--seconds", s] + c),
            ("udp", lambda p, c: [bench, "udp", "--seconds", s] if p.udp and p.user is None and not p.connections_only else None),
        ]
        for round_index in range(args.rounds):
            order = proxies[round_index % len(proxies):] + proxies[:round_index % len(proxies)]
            runs = {proxy.name: {} for proxy in proxies}
            for name, argv_for in scenarios:
                for proxy in order:
                    if not proxy.measured:
                        continue
                    credentials = ["--user", proxy.user, "--password", proxy.password] if proxy.user else []
                    argv = argv_for(proxy, credentials)
                    if argv is None:
                        continue
                    try:
                        runs[proxy.name][name] = measured(proxy, argv + proxy.proxy_args())
                    except ScenarioFailed as failure:
                        # One peer misbehaving costs its own figure, not the whole run.
                        print(f"{name} via {proxy.name} failed: {failure}", file=sys.stderr)
                        results[proxy.name].setdefault("failed", []).append(f"round {round_index + 1} {name}: {failure}")
            for proxy in proxies:
                if proxy.measured:
                    results[proxy.name]["runs"].append(runs[proxy.name])
            print(f"round {round_index + 1} of {args.rounds} measured", file=sys.stderr)
    finally:
        for proxy in proxies:
            proxy.stop()

    report(results, args)


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def report(results, args):
    rows = []
    def add(name, key, getter, better):
        rows.append((name, key, getter, better))
    gib = 1 << 30
    def cpu_per_gib(r, scenario):
        b = r.get(scenario)
        return b["cpu_s"] / (b["bytes"] / gib) if b and b.get("cpu_s") is not None and b["bytes"] else None
    def cpu_us_per(r, scenario, count_key, cpu_key="cpu_s"):
        c = r.get(scenario)
        return c[cpu_key] * 1e6 / c[count_key] if c and c.get(cpu_key) is not None and c[count_key] else None
    def median_of(getter):
        """A figure of the throughput rounds: its median over the rounds."""
        def figure(r):
            values = sorted(v for v in (getter(run) for run in r.get("runs", [])) if v is not None)
            if not values:
                return None
            middle = len(values) // 2
            return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
        return figure
    add("bulk 1 stream, Gbit/s", "bulk1_gbit", median_of(lambda r: r.get("bulk1", {}).get("gbit_per_s")), "high")
    add("bulk 4 streams, Gbit/s", "bulk4_gbit", median_of(lambda r: r.get("bulk4", {}).get("gbit_per_s")), "high")
    add("proxy CPU-s per GiB (1 stream)", "bulk1_cpu_per_gib", median_of(lambda r: cpu_per_gib(r, "bulk1")), "low")
    add("proxy CPU-s per GiB (4 streams)", "bulk4_cpu_per_gib", median_of(lambda r: cpu_per_gib(r, "bulk4")), "low")
    add("connections/s", "conn_per_s", median_of(lambda r: r.get("connections", {}).get("per_second")), "high")
    add("connect p50 ms", "conn_p50_ms", median_of(lambda r: r.get("connections", {}).get("p50_ms")), "low")
    add("connect p99 ms", "conn_p99_ms", median_of(lambda r: r.get("connections", {}).get("p99_ms")), "low")
    add("proxy CPU µs per connection", "conn_cpu_us", median_of(lambda r: cpu_us_per(r, "connections", "connections")), "low")
    add("  of which kernel", "conn_sys_us", median_of(lambda r: cpu_us_per(r, "connections", "connections", "cpu_sys_s")), "low")
    add("load generator + echo CPU µs per connection", "conn_generator_us",
        median_of(lambda r: cpu_us_per(r, "connections", "connections", "generator_cpu_s")), None)
    add("  of which kernel", "conn_generator_sys_us",
        median_of(lambda r: cpu_us_per(r, "connections", "connections", "generator_sys_s")), None)
    add(f"KiB per idle session ({args.sessions})", "idle_kib", lambda r: r.get("idle", {}).get("kib_per_session"), "low")
    add("KiB per idle session after 1 MiB each (1000)", "idle_warm_kib", lambda r: r.get("idle_warm", {}).get("kib_per_session"), "low")
    add("KiB kept after they close", "idle_kept_kib",
        lambda r: (r["idle"]["after_close_kib"] - r["idle"]["rest_kib"]) if r.get("idle", {}).get("kib_per_session") is not None else None, "low")
    add("UDP round trips/s", "udp_rt_per_s", median_of(lambda r: r.get("udp", {}).get("round_trips_per_s")), "high")
    add("UDP lost (all rounds)", "udp_lost", lambda r: sum(run["udp"]["lost"] for run in r.get("runs", []) if "udp" in run) if any("udp" in run for run in r.get("runs", [])) else None, "low")
    add("proxy CPU µs per UDP round trip", "udp_cpu_us", median_of(lambda r: cpu_us_per(r, "udp", "received")), "low")
    add("  of which kernel", "udp_sys_us", median_of(lambda r: cpu_us_per(r, "udp", "received", "cpu_sys_s")), "low")
    add("load generator + echo CPU µs per UDP round trip", "udp_generator_us",
        median_of(lambda r: cpu_us_per(r, "udp", "received", "generator_cpu_s")), None)
    add("  of which kernel", "udp_generator_sys_us", median_of(lambda r: cpu_us_per(r, "udp", "received", "generator_sys_s")), None)

    names = list(results)
    peers = [n for n in names if n in ("microsocks", "dante")]
    header = ["figure"] + names + ["sallyport ÷ best peer"]
    table = []
    summary = {}
    for title, key, getter, better in rows:
        values = {n: getter(results[n]) for n in names}
        peer_values = [values[p] for p in peers if values.get(p) is not None]
        best = None if better is None or not peer_values else (max(peer_values) if better == "high" else min(peer_values))
        ours = values.get("sallyport")
        ratio = (ours / best) if (ours is not None and best and ours > 0 and best > 0) else None
        table.append([title] + [fmt(values[n]) for n in names] + [fmt(ratio) + ("×" if ratio is not None else "")])
        summary[key] = {"values": values, "best_peer": best, "ratio": ratio, "better": better}
    for proxy_name, title, key in (("sallyport-pam", "username/password connections/s, credential cache on", "pam_conn_per_s"),
                                   ("pam-no-cache", "PAM logins/s (cache off: a PAM transaction each)", "pam_logins_per_s")):
        if proxy_name in results:
            figure = median_of(lambda r: r.get("connections", {}).get("per_second"))(results[proxy_name])
            table.append([title] + [fmt(figure) if n == proxy_name else "-" for n in names] + ["-"])
            summary[key] = figure
    blocklists = [n for n in names if n.startswith("blocklist-")]
    if blocklists:
        connections = lambda n: median_of(lambda r: r.get("connections", {}).get("per_second"))(results[n])
        one = connections("blocklist-1") if "blocklist-1" in results else None
        base_pss = results.get("blocklist-1", {}).get("pss_kib")
        for n in blocklists:
            entries = int(n.split("-")[1])
            rate = connections(n)
            pss = results[n].get("pss_kib")
            per_entry = (pss - base_pss) * 1024 / (entries - 1) if pss and base_pss and entries > 1 else None
            summary[n] = {"entries": entries, "conn_per_s": rate, "vs_1_entry": (rate / one) if rate and one else None,
                          "startup_s": results[n].get("startup_s"), "pss_kib": pss, "bytes_per_entry": per_entry}
            table.append([f"{n}: connections/s {fmt(rate)}, ×{fmt(summary[n]['vs_1_entry'])} of 1 entry, "
                          f"load {fmt(results[n].get('startup_s'))} s, PSS {fmt(pss)} KiB"
                          + (f", {per_entry:.0f} B/entry" if per_entry else "")] + ["-" for _ in names] + ["-"])
    plain_rate = median_of(lambda r: r.get("connections", {}).get("per_second"))(results["sallyport"]) if "sallyport" in results else None
    plain_cpu = summary.get("conn_cpu_us", {}).get("values", {}).get("sallyport")
    for n, title in (("egress-address", "egress address (source bound)"), ("upstream-hop", "through an upstream Sallyport (both proxies' CPU)")):
        if n in results:
            rate = median_of(lambda r: r.get("connections", {}).get("per_second"))(results[n])
            cpu = summary.get("conn_cpu_us", {}).get("values", {}).get(n)
            summary[n] = {"conn_per_s": rate, "cpu_us": cpu, "vs_plain": (rate / plain_rate) if rate and plain_rate else None,
                          "extra_cpu_us": (cpu - plain_cpu) if cpu and plain_cpu else None}
            table.append([f"{title}: connections/s {fmt(rate)} (×{fmt(summary[n]['vs_plain'])} of plain), CPU µs/conn {fmt(cpu)}"
                          f" (+{fmt(summary[n]['extra_cpu_us'])})"] + ["-" for _ in names] + ["-"])
    if "sallyport-tls" in results and "dante-tls" in results:
        def tls_figure(n, key):
            return summary.get(key, {}).get("values", {}).get(n)
        tls = {n: {k: tls_figure(n, k) for k in ("conn_per_s", "conn_cpu_us", "bulk1_gbit", "bulk1_cpu_per_gib")} for n in ("sallyport-tls", "dante-tls")}
        ratios = {k: (tls["sallyport-tls"][k] / tls["dante-tls"][k]) if tls["sallyport-tls"][k] and tls["dante-tls"][k] else None
                  for k in tls["sallyport-tls"]}
        summary["tls"] = {"values": tls, "ratio_to_stunnel_dante": ratios}
        table.append([f"TLS listener vs stunnel in front of Dante: connections/s {fmt(tls['sallyport-tls']['conn_per_s'])} vs "
                      f"{fmt(tls['dante-tls']['conn_per_s'])} (×{fmt(ratios['conn_per_s'])}), bulk Gbit/s "
                      f"{fmt(tls['sallyport-tls']['bulk1_gbit'])} vs {fmt(tls['dante-tls']['bulk1_gbit'])} (×{fmt(ratios['bulk1_gbit'])}), "
                      f"CPU-s/GiB ×{fmt(ratios['bulk1_cpu_per_gib'])}"] + ["-" for _ in names] + ["-"])
    widths = [max(len(str(row[i])) for row in [header] + table) for i in range(len(header))]
    line = lambda row: "  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(row))
    print(line(header))
    print(line(["-" * w for w in widths]))
    for row in table:
        print(line(row))
    failures = [(name, text) for name, result in results.items() for text in result.get("failed", [])]
    if failures:
        print("\nFailed runs (left out of the medians above):")
        for name, text in failures:
            print(f"  {name}: {text}")
    verdicts = targets(summary)
    if verdicts:
        print("\nTargets:")
        for verdict in verdicts:
            print("  " + verdict)
    summary["targets"] = verdicts
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"machine": {"cpus": os.cpu_count(), "kernel": platform.release()}, "seconds": args.seconds, "rounds": args.rounds,
                   "results": results, "summary": summary}, f, indent=2, default=str)
    print(f"\nJSON: {args.json}")


def targets(summary):
    """Each performance target against this run's figures, and for the CPU-bound ones what it would
    take: the load generator, its echo target and the proxy share the machine's cores, so a proxy
    costing p µs per connection allows at most cores ÷ (generator's µs + p) connections a second."""
    def value(key, name="sallyport"):
        return summary.get(key, {}).get("values", {}).get(name)
    def ratio(key):
        return summary.get(key, {}).get("ratio")
    def check(label, figure, goal, higher):
        if figure is None:
            return f"{label}: not measured"
        met = figure >= goal if higher else figure <= goal
        return f"{label}: {figure:.2f}× ({'≥' if higher else '≤'} {goal}×) {'met' if met else 'NOT met'}"
    lines = [
        check("bulk 1 stream vs best peer", ratio("bulk1_gbit"), 1.5, True),
        check("bulk 4 streams vs best peer", ratio("bulk4_gbit"), 1.5, True),
        check("CPU per GiB, 1 stream", ratio("bulk1_cpu_per_gib"), 0.5, False),
        check("CPU per GiB, 4 streams", ratio("bulk4_cpu_per_gib"), 0.5, False),
        check("connections/s", ratio("conn_per_s"), 1.5, True),
        check("CPU per connection", ratio("conn_cpu_us"), 0.5, False),
        check("connect p99", ratio("conn_p99_ms"), 1.0, False),
        check("KiB per idle session", ratio("idle_kib"), 1.0, False),
        check("UDP round trips/s", ratio("udp_rt_per_s"), 2.0, True),
    ]
    lost = value("udp_lost")
    lines.append(f"UDP datagrams lost: {lost} ({'met' if lost == 0 else 'NOT met'})" if lost is not None else "UDP lost: not measured")
    pam, plain = summary.get("pam_conn_per_s"), value("conn_per_s")
    if pam and plain:
        lines.append(check("username/password with the cache vs no auth", pam / plain, 0.8, True))
    cores = os.cpu_count() or 1
    for unit, rate_key, goal, cpu_key, sys_key, generator_key, floor_key in (
            ("connection", "conn_per_s", 1.5, "conn_cpu_us", "conn_sys_us", "conn_generator_us", "conn_generator_sys_us"),
            ("UDP round trip", "udp_rt_per_s", 2.0, "udp_cpu_us", "udp_sys_us", "udp_generator_us", "udp_generator_sys_us")):
        # The generator's own cost depends a little on the proxy (wake-ups of idle cores cost more on
        # a less loaded machine): take its cheapest proxied figure, the budget most in the proxy's favour.
        generators = [v for n, v in summary.get(generator_key, {}).get("values", {}).items() if n != "direct" and v]
        best, ours, floor = summary.get(rate_key, {}).get("best_peer"), value(cpu_key), value(floor_key, "direct")
        if not (best and generators and ours and floor) or (ratio(rate_key) or 0) >= goal:
            continue
        generator = min(generators)
        needed = cores * 1e6 / (goal * best) - generator
        lines.append(
            f"what {goal}× the best peer's {unit}s/s would take: the load generator and echo cost at least {generator:.1f} µs "
            f"per {unit} through a proxy, so {goal} × {best:,.0f}/s on {cores} cores leaves the proxy ≤ {needed:.1f} µs per "
            f"{unit}, user and kernel time together. Sallyport spends {ours:.1f} ({value(sys_key):.1f} in the kernel); the "
            f"kernel work alone of the same socket operations without a proxy (direct run, both ends) is {floor:.1f} µs.")
    best_cpu, floor = summary.get("conn_cpu_us", {}).get("best_peer"), value("conn_generator_sys_us", "direct")
    if best_cpu and floor and (ratio("conn_cpu_us") or 1) > 0.5:
        lines.append(f"CPU per connection ≤ 0.5× the best peer's {best_cpu:.1f} µs means ≤ {best_cpu / 2:.1f} µs; the kernel work "
                     f"alone of one bare connection (direct run, both ends) is {floor:.1f} µs, and a proxy holds two halves of two.")
    return lines


if __name__ == "__main__":
    main()
