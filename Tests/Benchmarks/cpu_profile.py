#!/usr/bin/env python3
"""Where a proxy's CPU goes: Sallyport, the bare SwiftNIO relay (sallyport-bench floor-proxy),
microsocks and Dante, each profiled with perf while the load generator runs bench.py's
single-stream bulk, connection-rate and UDP scenarios against it, on loopback only.

Usage: Tests/Benchmarks/cpu_profile.py BIN_DIR [--seconds S] [--only NAMES] [--json PATH]
Prints, for each scenario, one table: each proxy's CPU µs per MiB relayed, per connection or per
UDP round trip (utime + stime from /proc), split by where perf's samples fell: kernel time by the
system call it was spent in (loopback delivers to the peer socket inside the sender's send), and
user time by code: the proxy's own, SwiftNIO, the Swift runtime and standard library, libc.
"""
import argparse, collections, json, os, re, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the proxies, their configurations and the measuring helpers)

# The kernel frames a system call's samples pass through (some entry points are inlined, so the
# inner ones are matched too: ksys_write, __sys_sendmmsg, do_epoll_wait).
SYSCALL = re.compile(r"^(?:__x64_sys_|__ia32_sys_|__do_sys_|__se_sys_|__sys_|ksys_|do_)(\w+)$")
SYSCALL_GROUPS = {call: group for group, calls in {
    "accept": ("accept", "accept4"),
    "connect": ("connect",),
    "socket, bind, options": ("socket", "bind", "setsockopt", "getsockopt"),
    "getsockname, getpeername": ("getsockname", "getpeername"),
    "read, recv": ("read", "readv", "recvfrom", "recvmsg", "recvmmsg"),
    "write, send": ("write", "writev", "sendto", "sendmsg", "sendmmsg"),
    "close, shutdown": ("close", "shutdown"),
    "epoll_wait, poll": ("epoll_wait", "epoll_pwait", "poll", "sys_poll", "ppoll", "select", "pselect6"),
    "epoll_ctl": ("epoll_ctl",),
    "futex, thread wake-ups": ("futex",),
    "threads (clone, mmap, exit)": ("clone", "clone3", "mmap", "mmap_pgoff", "munmap", "mprotect", "madvise", "exit"),
}.items() for call in calls}
SALLYPORT_MODULES = ("Sallyport", "SallyportRelay", "SallyportPolicy", "SallyportAuth", "SOCKSProtocol", "sallyport_bench")


def user_category(symbol, dso):
    if "microsocks" in dso or "sockd" in dso or "danted" in dso:
        return "user: the proxy's own code"
    module = re.match(r"\$s(\d+)(\w+)", symbol)
    if module:
        name = module.group(2)[: int(module.group(1))]
        if name.startswith("NIO") or name.startswith("_NIO"):
            return "user: SwiftNIO"
        if name in SALLYPORT_MODULES:
            return "user: the proxy's own code"
        if name == "Logging":
            return "user: swift-log"
    if symbol.startswith(("$ss", "$sS")):
        return "user: Swift standard library"
    if "libswift" in dso or symbol.startswith(("swift_", "swift::", "_swift")):
        return "user: Swift runtime (retain/release, casts, metadata, exclusivity)"
    if "libc" in dso or "ld-linux" in dso or symbol.startswith(("_int_", "malloc", "free", "__libc", "cfree")):
        return "user: libc (malloc, syscall stubs)"
    return "user: other"


def categorize(script_output, pids):
    """Counts perf script samples of the given processes by category, and by leaf symbol."""
    counts = collections.Counter()
    symbols = collections.Counter()
    sample = None
    def finish():
        if sample is None or sample["pid"] not in pids or not sample["frames"]:
            return
        leaf_symbol, leaf_dso = sample["frames"][0]
        symbols[f"{leaf_symbol[:100]} ({os.path.basename(leaf_dso)})"] += 1
        if "kernel" in leaf_dso:
            for symbol, dso in sample["frames"]:
                found = SYSCALL.match(symbol)
                if found and found.group(1) in SYSCALL_GROUPS:
                    counts["kernel: " + SYSCALL_GROUPS[found.group(1)]] += 1
                    return
            for symbol, dso in sample["frames"]:
                if symbol.startswith(("__x64_sys_", "x64_sys_call")):
                    counts["kernel: other system calls"] += 1
                    return
            counts["kernel: outside system calls (interrupts, page faults)"] += 1
        else:
            counts[user_category(leaf_symbol, leaf_dso)] += 1
    for line in script_output.splitlines():
        if not line.strip():
            finish()
            sample = None
        elif not line.startswith(("\t", " " * 8)) or sample is None:
            finish()
            head = re.search(r"(\d+)/(\d+)", line)
            sample = {"pid": int(head.group(1)) if head else -1, "frames": []}
        else:
            frame = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
            if frame:
                symbol = re.sub(r"\+0x[0-9a-f]+$", "", frame.group(1))
                sample["frames"].append((symbol, frame.group(2)))
    finish()
    return counts, symbols


def profiled(proxy, argv, seconds, work):
    """Runs the scenario under a system-wide perf record; returns the result, the proxy's CPU and
    its samples by category."""
    data = os.path.join(work, f"{proxy.name}.perf")
    recorder = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "1999", "-o", data, "--", "sleep", str(seconds + 2)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    result = bench.measured(proxy, argv)
    pids = set(bench.tree(proxy.pid))
    recorder.wait(timeout=seconds + 60)
    script = subprocess.run(["perf", "script", "-i", data, "-F", "pid,tid,ip,sym,dso"], capture_output=True, text=True,
                            timeout=600).stdout
    os.remove(data)
    counts, symbols = categorize(script, pids)
    return result, counts, symbols


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--only", default="")
    parser.add_argument("--json", default=os.path.join(bench.ROOT, "bench-results", "profile.json"))
    args = parser.parse_args()
    if not shutil.which("perf"):
        raise SystemExit("perf not found: install linux-perf (make profile does)")
    generator = os.path.join(args.bin, "sallyport-bench")
    sallyport = os.path.join(args.bin, "sallyport")
    work = tempfile.mkdtemp(prefix="sallyport-profile-")
    proxies = [
        bench.Proxy("sallyport", lambda port: bench.sallyport_argv(sallyport, os.path.join(work, "sallyport.yaml"), port), log=os.path.join(work, "sallyport.log")),
        bench.Proxy("nio-floor", lambda port: [generator, "floor-proxy", "--listen", f"{bench.PROXY_HOST}:{port}"], udp=False),
        bench.Proxy("microsocks", lambda port: [shutil.which("microsocks") or "/usr/bin/microsocks", "-i", bench.PROXY_HOST,
                                                "-p", str(port)], udp=False),
        bench.Proxy("dante", lambda port: bench.dante_argv(work, port)),
    ]
    if args.only:
        proxies = [p for p in proxies if p.name in args.only.split(",")]
    s = str(args.seconds)
    # (name, unit, load generator's command line, units in a result, the rate and its label)
    scenarios = [
        ("bulk1", "MiB", lambda: [generator, "bulk", "--streams", "1", "--seconds", s], lambda r: r["bytes"] / (1 << 20),
         lambda r: (r["gbit_per_s"], "Gbit/s")),
        ("connections", "connection", lambda: [generator, "connections", "--workers", "8", "--seconds", s],
         lambda r: r["connections"], lambda r: (r["per_second"], "connections/s")),
        ("udp", "UDP round trip", lambda: [generator, "udp", "--seconds", s], lambda r: r["received"],
         lambda r: (r["round_trips_per_s"], "round trips/s")),
    ]
    report = {}
    try:
        for proxy in proxies:
            proxy.start()
            report[proxy.name] = {}
            for name, _, argv, units, _ in scenarios:
                if name == "udp" and not proxy.udp:
                    continue
                result, counts, symbols = profiled(proxy, argv() + proxy.proxy_args(), args.seconds, work)
                report[proxy.name][name] = {"result": result, "samples": dict(counts), "count": units(result),
                                            "top_symbols": symbols.most_common(300), "total_samples": sum(symbols.values())}
                print(f"profiled: {proxy.name} {name}", file=sys.stderr)
            proxy.stop()
    finally:
        for proxy in proxies:
            proxy.stop()

    for name, unit, _, _, rate_of in scenarios:
        names = [n for n in report if name in report[n]]
        if not names:
            continue
        categories = sorted({c for n in names for c in report[n][name]["samples"]})
        categories.sort(key=lambda c: (not c.startswith("kernel"), c))
        rows = []
        for category in categories:
            row = [category]
            for n in names:
                entry = report[n][name]
                total = sum(entry["samples"].values())
                per_op = entry["result"]["cpu_s"] * 1e6 / entry["count"] if entry["count"] else 0
                share = entry["samples"].get(category, 0) / total if total else 0
                row.append(f"{per_op * share:.1f}" if share else "-")
            rows.append(row)
        totals = ["CPU µs per " + unit + " (from /proc)"]
        rates = ["rate during the profile"]
        for n in names:
            entry = report[n][name]
            totals.append(f"{entry['result']['cpu_s'] * 1e6 / entry['count']:.1f}" if entry["count"] else "-")
            rate, label = rate_of(entry["result"])
            rates.append(f"{rate:,.1f} {label}" if rate < 100 else f"{rate:,.0f} {label}")
        header = [f"{unit}: µs per {unit} by where the samples fell"] + names
        table = [header] + rows + [totals, rates]
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        print()
        for index, row in enumerate(table):
            print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
            if index == 0:
                print("  ".join("-" * w for w in widths))
    for name, unit, _, _, _ in scenarios:
        entry = report.get("sallyport", {}).get(name)
        if entry and entry["total_samples"]:
            print(f"\nSallyport, {unit}: the 15 hottest functions (share of its samples)")
            for symbol, count in entry["top_symbols"][:15]:
                print(f"  {count / entry['total_samples'] * 100:5.1f} %  {symbol}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2, default=str)
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
