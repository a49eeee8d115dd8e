import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Testing

/// The resident memory of a process, in KiB.
func residentKiB(_ pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
    return line.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) }
}

/// CPU seconds (user + system) a process has used so far.
func cpuSeconds(_ pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, utime 14 and stime 15 (1-based over the whole line).
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// One client doing its worst must not hurt another: each test here runs the real server binary.
@Suite(.serialized, .system, .timeLimit(.minutes(3))) struct AbuseTests {
    @Test(arguments: ["udp", "connect"])
    func lookupFloodToADeadDNSServerLeavesOtherClientsFast(phase: String) async throws {
        let dnsTimeout = 2.0
        let script = packageRoot() + "/Tests/Integration/dns_starvation.py"
        let python = which("python3") ?? "/usr/bin/python3"
        let output = try await withNetworkNamespace(
            resolvConf: "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n",
            hosts: "127.0.0.1 localhost\n127.0.0.1 target.test\n"
        ) { namespace in
            try await runProcess(
                which("ip") ?? "/usr/sbin/ip", ["netns", "exec", namespace, python, script, sallyportExecutable(), phase, "\(dnsTimeout)"],
                timeout: 60)
        }
        #expect(output.status == 0, "\(output.stdout) \(output.stderr)")
        let line = output.stdout.split(separator: "\n").last.map(String.init) ?? ""
        let result = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
        #expect(result["error"] == nil, "\(result["error"] ?? "")")
        // Another client's CONNECT to a hosts-file name answers at once, and relays.
        #expect(result["code"] as? Int == 0, "\(result)")
        #expect((result["seconds"] as? Double ?? 99) < 1.0, "\(result)")
        #expect(result["echoed"] as? Bool == true)
        #expect(result["server_alive"] as? Bool == true)
        // The flood did reach the dead DNS server: the lookups were real.
        #expect((result["dns_queries"] as? Int ?? 0) > 0, "\(result)")
        if phase == "connect" {
            // Every flooding CONNECT gets host unreachable within timeouts.dns + 1 s.
            #expect(result["flood_codes"] as? [String] == ["4"], "\(result)")
            #expect(result["flood_unanswered"] as? Int == 0)
            #expect((result["flood_slowest"] as? Double ?? 99) <= dnsTimeout + 1, "\(result)")
        }
    }

    @Test(.timing) func atTheDescriptorLimitTheServerPausesAcceptsAndRecovers() async throws {
        let echo = try await TargetServer.echo()
        // 160 descriptors, soft and hard, so that the server cannot raise its own limit.
        let (server, port) = try await serverWithDescriptorLimit(160, loopbackRules)
        defer { server.signal(SIGKILL) }
        let pid = server.processIdentifier
        // 300 clients that connect and say nothing: more than the server has descriptors for.
        var clients = try await onThread { try (0..<300).map { _ in try TestSocket(host: "127.0.0.1", port: port) } }
        #expect(await server.waitForStderr(containing: "cannot accept: out of file descriptors"))
        // While it is full, it idles: well under 0.3 CPU-seconds per second.
        let start = cpuSeconds(pid) ?? 0
        let began = NIODeadline.now()
        try await Task.sleep(for: .seconds(2))
        let used = (cpuSeconds(pid) ?? 99) - start
        let elapsed = Double((NIODeadline.now() - began).nanoseconds) / 1e9
        #expect(used / elapsed < (underSanitizer ? 0.6 : 0.3), "\(used) CPU-s in \(elapsed) s")
        // Said once per listening socket, not once per failed accept.
        let notices = server.stderr.split(separator: "\n").filter { $0.contains("cannot accept") }.count
        #expect(notices >= 1 && notices <= System.coreCount, "\(notices) notices")
        // The clients leave; the server accepts again and serves.
        clients.removeAll()  // closes them
        let code = try await onThread { () throws -> SOCKSReplyCode in
            for _ in 0..<50 {
                if let socket = try? TestSocket(host: "127.0.0.1", port: port, timeout: 3),
                    let reply = try? socket.socksConnect(to: loopback4(echo.port)) {
                    return reply.code
                }
                usleep(100_000)
            }
            return .generalFailure
        }
        #expect(code == .succeeded)
        #expect(await server.waitForStderr(containing: "accepting again"))
    }

    /// The attack: a descriptor limit of 256, one address opening 400 connections that send
    /// nothing (sessions_per_client counts none of them: no request came), then another client.
    /// connections_per_client closes the flood's connections past 20 at accept.
    @Test func silentConnectionsFromOneClientAreCappedAtAcceptAndOthersAreServed() async throws {
        let echo = try await TargetServer.echo()
        let (server, port) = try await serverWithDescriptorLimit(256, "limits: {sessions_per_client: 20, connections_per_client: 20}\n" + loopbackRules)
        defer { server.signal(SIGKILL) }
        let flood = try await onThread { try (0..<400).map { _ in try TestSocket(host: "127.0.0.1", port: port, from: "127.0.4.1", timeout: 5) } }
        #expect(await server.waitForStderr(containing: "connections closed at accept"))
        let held = try await onThread { flood.filter { !$0.waitForClose(timeout: 0.05) }.count }
        #expect(held <= 20, "\(held) silent connections held")
        let code = try await onThread {
            try TestSocket(host: "127.0.0.1", port: port, from: "127.0.4.2", timeout: 10).socksConnect(to: loopback4(echo.port)).code
        }
        #expect(code == .succeeded)
        // One notice for the whole flood (one per 10 s), carrying the count.
        let notices = server.stderr.split(separator: "\n").filter { $0.contains("connections closed at accept") }
        #expect(notices.count == 1 && notices[0].contains("client=127.0.4.1"), "\(notices)")
        withExtendedLifetime(flood) {}
        await echo.stop()
    }

    @Test func refusedDestinationFloodFromOneAssociationStaysBounded() async throws {
        let echo = try await UDPEchoServer.start()
        let config = try temporaryFile(loopbackRules)
        let server = try BackgroundProcess(sallyportExecutable(), ["--config", config, "--listen", "127.0.0.1:0"])
        defer { server.signal(SIGKILL) }
        #expect(await server.waitForStderr(containing: "msg=listening"))
        let listening = server.stderr.split(separator: "\n").first { $0.contains("msg=listening") }.map(String.init) ?? ""
        let port = Int(logfmtFields(listening)["addresses"]?.split(separator: ":").last ?? "") ?? 0
        let pid = server.processIdentifier
        let (warmedUp, before, after, linesBefore, answer) = try await onThread { () throws -> (Bool, Int?, Int?, Int, [UInt8]?) in
            let (control, reply) = try udpAssociate(proxyPort: port)
            let relay = try reply.bound.testAddress
            let client = try TestUDPSocket(timeout: 2)
            // Warm up: the association and its first destination exist before the baseline.
            try client.send(TestUDPSocket.packet(to: loopback4(echo.port), [1]), to: relay)
            let warmedUp = client.receive(timeout: 5 * sanitizerSlowdown) != nil
            let before = residentKiB(pid)
            let linesBefore = server.stderr.split(separator: "\n").count
            // 100,000 datagrams to 100,000 destinations behind the special-address guard (10/8).
            for index in 0..<100_000 {
                let destination = SOCKSEndpoint(host: .ipv4(SOCKSIPv4Address(0x0A00_0000 | UInt32(index))), port: 9)
                try client.send(TestUDPSocket.packet(to: destination, [UInt8(truncatingIfNeeded: index)]), to: relay)
                if index % 2000 == 1999 { usleep(2000) }  // let the server keep up rather than the kernel drop
            }
            // The association still relays to an allowed destination (UDP may lose a datagram
            // while the server drains the flood: a few tries, each waiting up to 2 s).
            var answer: [UInt8]?
            for _ in 0..<5 where answer == nil {
                try client.send(TestUDPSocket.packet(to: loopback4(echo.port), [42]), to: relay)
                answer = client.receive().map { try? TestUDPSocket.unpack($0).1 } ?? nil
            }
            _ = control
            return (warmedUp, before, residentKiB(pid), linesBefore, answer)
        }
        #expect(warmedUp, "the first datagram came back before the flood")
        #expect(answer == [42])
        #expect(server.isRunning)
        let growth = (after ?? 0) - (before ?? 0)
        #expect(before != nil && after != nil)
        #expect(growth < 8 * 1024 || underSanitizer, "RSS grew by \(growth) KiB")
        let newLines = server.stderr.split(separator: "\n").count - linesBefore
        #expect(newLines < 100, "\(newLines) new log lines")
        #expect(server.stderr.contains("udp destinations refused"))
        server.signal(SIGTERM)
        #expect(await server.waitForExit(timeout: 10) == 0)
        // The association's access-log line carries the count of refused datagrams.
        let session = server.stderr.split(separator: "\n").first { $0.contains("msg=session") && $0.contains("cmd=udp") }.map(String.init) ?? ""
        #expect(Int(logfmtFields(session)["denied"] ?? "") ?? 0 > 1000, "\(session)")
        await echo.stop()
    }

    // How names are looked up, in a network namespace with a resolver of the test's own. In this
    // suite, which is serialized: namespaces made and deleted at the same time by tests running side
    // by side once made `ip netns exec` fail without a word.
    @Test func namesAreLookedUpAsGivenNotThroughSearchDomains() async throws {
        let ip = which("ip") ?? "/usr/sbin/ip"
        let python = which("python3") ?? "/usr/bin/python3"
        let scripts = packageRoot() + "/Tests/Integration"
        let config = """
            listen: [127.0.0.1:0]
            rules:
              - {name: no-corp, action: deny, to: [.corp.test]}
              - {name: namespace-loopback, action: allow, to: [127.0.0.0/8]}
            """
        let replies = try await withNetworkNamespace(
            resolvConf: "nameserver 127.0.0.1\nsearch corp.test\noptions timeout:1 attempts:1\n", hosts: "127.0.0.1 localhost\n"
        ) { namespace -> [String] in
            // A DNS server that knows db.corp.test; resolv.conf would turn "db" into that name.
            let dns = try BackgroundProcess(ip, ["netns", "exec", namespace, python, scripts + "/tiny_dns.py", "127.0.0.1", "53", "db.corp.test=127.0.0.1"])
            defer { dns.signal(SIGKILL) }
            #expect(await dns.waitForStderr(containing: "ready"), "the DNS server did not start: \(dns.stderr)")
            let running = try await ServerProcess.start(config, namespace: namespace)
            let (server, port) = (running.process, "\(running.port)")
            defer { server.signal(SIGKILL) }
            var replies: [String] = []
            for name in ["db", "db.corp.test", "localhost"] {
                let result = try await runProcess(ip, ["netns", "exec", namespace, python, scripts + "/socks_connect.py", port, name, "9"], timeout: 30)
                let reply = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                replies.append(reply.isEmpty ? "no reply: \(result.stderr)" : reply)
            }
            #expect(!dns.stderr.contains("asked db.corp.test") || replies[1] == "2", "\(dns.stderr)")
            return replies
        }
        // "db" is not "db.corp.test" in disguise: the rule that refuses .corp.test never saw that
        // name, so it must not be looked up; "db" itself does not exist (reply 4).
        #expect(replies[0] == "4", "\(replies)")
        // Asked by its full name, the rule refuses it before any lookup (reply 2).
        #expect(replies[1] == "2", "\(replies)")
        // The hosts file still answers (nothing listens on port 9: refused, 5).
        #expect(replies[2] == "5", "\(replies)")
    }

    @Test func unreachableNetworksAndHostsGetReplies3And4OverTheWire() async throws {
        let ip = which("ip") ?? "/usr/sbin/ip"
        let python = which("python3") ?? "/usr/bin/python3"
        let replies = try await withNetworkNamespace(resolvConf: "", hosts: "127.0.0.1 localhost\n") { namespace -> [String] in
            // No route at all to 203.0.113.0/24 (ENETUNREACH); 198.51.100.0/24 is routed as
            // unreachable (EHOSTUNREACH).
            let route = try await runProcess(ip, ["netns", "exec", namespace, ip, "route", "add", "unreachable", "198.51.100.0/24"])
            #expect(route.status == 0, "\(route.stderr)")
            let config = """
                listen: [127.0.0.1:0]
                rules:
                  - {name: test-nets, action: allow, to: [198.51.100.0/24, 203.0.113.0/24]}
                """
            let running = try await ServerProcess.start(config, namespace: namespace)
            let (server, port) = (running.process, "\(running.port)")
            defer { server.signal(SIGKILL) }
            var replies: [String] = []
            for address in ["203.0.113.5", "198.51.100.7"] {
                let result = try await runProcess(
                    ip, ["netns", "exec", namespace, python, packageRoot() + "/Tests/Integration/socks_connect.py", port, address, "80"], timeout: 30)
                replies.append(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            #expect(await server.waitForStderr(containing: "msg=session", count: 2))
            let sessions = server.stderr.split(separator: "\n").filter { $0.contains("msg=session") }.map { logfmtFields(String($0)) }
            #expect(sessions.map { $0["reply"] ?? "" }.sorted() == ["3", "4"], "\(sessions)")
            #expect(sessions.allSatisfy { $0["end"] == "request_failed" }, "\(sessions)")
            return replies
        }
        #expect(replies == ["3", "4"])
    }
}
