#!/usr/bin/env python3
"""Scale-out, tested: HAProxy (TCP mode, send-proxy-v2, health checks on /readyz) in front of three
Sallyport instances, in a network namespace of the test's own.

    cluster_test.py SALLYPORT [--json PATH]

Each claim is asserted; the figures (sessions per instance, sessions failed while an instance is
killed and during a rolling reload and restart, time to take a dead instance out and to bring it
back) are printed and written to PATH as JSON. Exit status 0 when every claim holds.

Inside the namespace the instances stand for three machines: instance i listens on 127.0.1.i:1080
(admin on 127.0.1.i:9180) and trusts only the balancer at 127.0.0.1; the balancer listens on
127.0.0.1:1080; clients connect from 127.0.0.10-19 (and .66, a client the rules deny)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_support import (  # noqa: E402
    Instance, Load, UDPEcho, HAProxy, TCPEcho, deny_session, die_with_parent, session, udp_round_trip, wait_for,
)

BALANCER = ("127.0.0.1", 1080)
ECHO = ("127.0.0.1", 7000)
CLIENTS = [f"127.0.0.{n}" for n in range(10, 20)]
DENIED, DENIED_AFTER_RELOAD = "127.0.0.66", "127.0.0.67"


def sweep_earlier_runs(ip):
    """Removes the namespaces of earlier runs that were killed before they could (named by PID)."""
    listed = subprocess.run([ip, "netns", "list"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        name = line.split(" ")[0]
        if not name.startswith("sallyport-cluster-"):
            continue
        pid = name.rsplit("-", 1)[-1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run([ip, "netns", "delete", name])


def outside(argv):
    """Creates the namespace, runs this script inside it, and removes the namespace whatever happens."""
    name = f"sallyport-cluster-{os.getpid()}"
    ip = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
    sweep_earlier_runs(ip)
    added = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True)
    if added.returncode != 0:
        print(f"cannot create a network namespace (ip netns add; needs root): {added.stderr}", file=sys.stderr)
        return 1
    inner = None
    try:
        subprocess.run([ip, "netns", "exec", name, ip, "link", "set", "lo", "up"], check=True)
        inner = subprocess.Popen([ip, "netns", "exec", name, sys.executable, os.path.abspath(__file__), "--inside"] + argv,
                                 start_new_session=True, preexec_fn=die_with_parent)
        return inner.wait(timeout=600)
    except subprocess.TimeoutExpired:
        print("cluster test: over its 600 s limit", file=sys.stderr)
        return 1
    finally:
        if inner is not None and inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)
            inner.wait()
        subprocess.run([ip, "netns", "delete", name])


class Claims:
    """Checks that all run: each failure is reported, and the exit status says whether any failed."""

    def __init__(self):
        self.failed = []

    def check(self, holds, claim):
        print(("  ok    " if holds else "  FAIL  ") + claim, flush=True)
        if not holds:
            self.failed.append(claim)


def inside(sallyport, json_path):
    claims, figures = Claims(), {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    begun = time.monotonic()
    work = tempfile.mkdtemp(prefix="sallyport-cluster-")
    echo, udp_echo = TCPEcho(ECHO), UDPEcho(ECHO)
    instances = [Instance(sallyport, work, index, balancer=BALANCER[0], denied=[DENIED]) for index in (1, 2, 3)]
    haproxy = None
    try:
        for instance in instances:
            instance.start()
        haproxy = HAProxy(work, BALANCER, instances)
        haproxy.start()
        claims.check(wait_for(lambda: haproxy.states() == {"s1": "UP", "s2": "UP", "s3": "UP"}, 20),
                     "the balancer's health checks (/readyz) find the three instances up")

        print("spread and client addresses", flush=True)
        load = Load(BALANCER, ECHO, CLIENTS, threads=4)
        done = load.run_count(300)
        claims.check(done.failed == 0 and len(done.ok) == 300, f"300 sessions through the balancer, {done.failed} failed")
        wait_for(lambda: sum(len(instance.session_clients()) for instance in instances) >= 300, 10)
        logged = {instance.name: instance.session_clients() for instance in instances}
        per_instance = {name: len(clients) for name, clients in logged.items()}
        figures["sessions_per_instance"] = per_instance
        claims.check(all(count >= 60 for count in per_instance.values()), f"sessions spread over the instances: {per_instance}")
        seen = sorted(client for clients in logged.values() for client in clients)
        claims.check(seen == sorted(done.ok), "the instances' access logs name each session's real client address and port")
        claims.check(not any(client.startswith(BALANCER[0] + ":") for client in seen), "no session logged as the balancer's address")
        denied = [deny_session(BALANCER, ECHO, DENIED) for _ in range(3)]
        claims.check(all(port is not None for port in denied), "a client the instances' client rules deny is closed")
        denied_logged = lambda: sum(instance.count(f"client={DENIED}:", "end=client_denied") for instance in instances)
        claims.check(wait_for(lambda: denied_logged() == 3, 10), f"the instances' client rules saw {DENIED} ({denied_logged()} of 3 logged)")

        print("UDP through the balancer", flush=True)
        udp = [udp_round_trip(BALANCER, ECHO, CLIENTS[0]) for _ in range(3)]
        relays = sorted({relay for relay, ok in udp if ok})
        claims.check(all(ok for _, ok in udp), f"UDP associations relay datagrams ({udp})")
        claims.check(relays == [instance.address for instance in instances],
                     f"each association is answered with its instance's own address (udp.advertise): {relays}")

        print("an instance killed", flush=True)
        load = Load(BALANCER, ECHO, CLIENTS, threads=6)
        load.start()
        wait_for(lambda: len(load.results) >= 200, 10)
        killed_at = time.monotonic()
        instances[1].kill()
        out = wait_for(lambda: haproxy.states().get("s2", "").startswith("DOWN"), 30)
        down_at = time.monotonic()
        after = len(load.results)
        wait_for(lambda: len(load.results) >= after + 300, 20)
        load.stop()
        figures["seconds_to_take_out"] = round(down_at - killed_at, 3)
        during = [r for r in load.results if r.started >= killed_at and r.started < down_at or r.started < killed_at < r.ended]
        figures["failed_during_kill"] = sum(1 for r in during if not r.ok)
        figures["sessions_during_kill"] = len(during)
        claims.check(out, f"the killed instance is taken out of rotation ({figures['seconds_to_take_out']} s)")
        later = [r for r in load.results if r.started > down_at]
        claims.check(len(later) >= 300 and all(r.ok for r in later),
                     f"new sessions served after it went out: {sum(r.ok for r in later)} of {len(later)}")
        claims.check(figures["failed_during_kill"] <= 6,
                     f"only sessions in flight on the killed instance fail: {figures['failed_during_kill']} of {len(during)}")

        print("the instance back", flush=True)
        started_at = time.monotonic()
        instances[1].start()
        back = wait_for(lambda: haproxy.states().get("s2") == "UP", 30)
        figures["seconds_to_bring_back"] = round(time.monotonic() - started_at, 3)
        claims.check(back, f"the restarted instance is back in rotation ({figures['seconds_to_bring_back']} s)")

        print("a rolling reload", flush=True)
        held = [session(BALANCER, ECHO, CLIENTS[i], hold=True) for i in range(3)]
        load = Load(BALANCER, ECHO, CLIENTS, threads=6)
        load.start()
        reloaded = []
        for instance in instances:
            before = len(load.results)
            instance.write_config(denied=[DENIED, DENIED_AFTER_RELOAD])
            instance.signal(signal.SIGHUP)
            reloaded.append(wait_for(lambda: instance.count("configuration reloaded") >= 1, 10))
            wait_for(lambda: len(load.results) >= before + 150, 20)
        load.stop()
        figures["sessions_during_reload"] = len(load.results)
        figures["failed_during_reload"] = sum(1 for r in load.results if not r.ok)
        claims.check(all(reloaded), "each instance reloaded in turn")
        claims.check(figures["failed_during_reload"] == 0,
                     f"no session failed during the rolling reload: {figures['failed_during_reload']} of {len(load.results)} {load.errors()}")
        claims.check(haproxy.checks_down() == {"s1": 0, "s2": 1, "s3": 0}, f"no instance left rotation while reloading: {haproxy.checks_down()}")
        claims.check(all(h is not None and h.echo() for h in held), "sessions open across the reloads still relay")
        for h in held:
            if h is not None:
                h.close()
        after_reload = [deny_session(BALANCER, ECHO, DENIED_AFTER_RELOAD) for _ in range(3)]
        claims.check(all(port is not None for port in after_reload), "the reloaded rules are in force on every instance")

        print("a rolling restart", flush=True)
        load = Load(BALANCER, ECHO, CLIENTS, threads=6)
        load.start()
        restarted, taken_out = [], {}
        for instance in instances:
            name, stopping_at = instance.name, time.monotonic()
            instance.signal(signal.SIGTERM)
            # timeouts.shutdown_delay (2 s): /readyz says 503 while the listeners still accept.
            if wait_for(lambda: haproxy.states().get(name, "").startswith("DOWN"), 10):
                taken_out[name] = round(time.monotonic() - stopping_at, 3)
            restarted.append(instance.wait_exit(20) == 0)
            instance.start()
            restarted.append(wait_for(lambda: haproxy.states().get(name) == "UP", 30))
        before = len(load.results)
        wait_for(lambda: len(load.results) >= before + 150, 20)
        load.stop()
        figures["sessions_during_restart"] = len(load.results)
        figures["failed_during_restart"] = sum(1 for r in load.results if not r.ok)
        figures["seconds_to_take_out_on_sigterm"] = taken_out
        claims.check(len(taken_out) == 3 and all(seconds < 2 for seconds in taken_out.values()),
                     f"each instance was taken out by its /readyz before its listeners closed: {taken_out} s (delay 2 s)")
        claims.check(all(restarted), "each instance stopped (exit 0) and came back into rotation in turn")
        claims.check(figures["failed_during_restart"] == 0,
                     f"no session failed during the rolling restart: {figures['failed_during_restart']} of {len(load.results)} {load.errors()}")
    finally:
        for instance in instances:
            instance.kill()
        if haproxy is not None:
            haproxy.stop()
        echo.stop()
        udp_echo.stop()

    figures["seconds"] = round(time.monotonic() - begun, 1)
    figures["haproxy"] = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    print(json.dumps(figures, indent=2))
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as out:
            json.dump(figures, out, indent=2)
    if claims.failed:
        print(f"cluster test: {len(claims.failed)} claim(s) failed; logs in {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("cluster test: every claim holds")
    return 0


def main():
    args = sys.argv[1:]
    if args and args[0] == "--inside":
        args = args[1:]
        json_path = args[args.index("--json") + 1] if "--json" in args else None
        return inside(os.path.abspath(args[0]), json_path)
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    args[0] = os.path.abspath(args[0])
    return outside(args)


if __name__ == "__main__":
    sys.exit(main())
