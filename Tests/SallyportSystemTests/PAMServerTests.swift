import SallyportTestSupport
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import SOCKSProtocol
import Testing

/// The authentication chain as the server builds it from its configuration file (PAM, cache,
/// throttle), driven over the wire against the real binary under pam_wrapper.
@Suite(.serialized, .system, .timeLimit(.minutes(3)), .enabled(if: underPAMWrapper, "needs pam_wrapper: run through `make test`"))
struct PAMServerTests {
    /// The binary with method username through `service` and `auth` settings (YAML under `auth:`).
    func server(service: String, auth: String) async throws -> ServerProcess {
        try await ServerProcess.start("""
            listen: [127.0.0.1:0]
            methods: [username]
            auth:
              pam:
                service: \(service)
            \(auth)
            """ + loopbackRules)
    }

    /// Logs in as `user` and relays one byte through the echo server; the seconds it took, or nil
    /// when the login or the CONNECT failed.
    func timedLogin(_ port: Int, _ user: String, _ password: String, echo: Int, from source: String? = nil) throws -> Double? {
        let start = Date()
        let socket = try TestSocket(host: "127.0.0.1", port: port, from: source)
        try socket.send([5, 1, 2])
        guard try socket.receive(exactly: 2) == [5, 2] else { return nil }
        try socket.send([1, UInt8(user.utf8.count)] + Array(user.utf8) + [UInt8(password.utf8.count)] + Array(password.utf8))
        guard try socket.receive(exactly: 2) == [1, 0] else { return nil }
        var request = ByteBuffer()
        request.writeSOCKSRequest(SOCKSRequest(command: .connect, destination: loopback4(echo)))
        try socket.send(Array(request.readableBytesView) + [7])
        guard try socket.readReply().code == .succeeded else { return nil }
        guard try socket.receive(exactly: 1) == [7] else { return nil }
        return Date().timeIntervalSince(start)
    }

    @Test(.timing) func wrongLoginFloodAgainstATwoSecondFailDelayLeavesGoodUsersFast() async throws {
        let echo = try await TargetServer.echo()
        let server = try await server(service: "sallyport-faildelay", auth: "  cache_ttl: 30s")
        defer { server.process.signal(SIGKILL) }
        // alice has logged in before: her next login is answered from the cache.
        #expect(try await onThread { try timedLogin(server.port, "alice", "wonderland", echo: echo.port) } != nil)

        // 20 addresses, each sending a wrong password every 0.4 s for 8 s: 50 a second. A flooding
        // client does not wait for its answer (2 s away): it sends greeting and credentials at once.
        let flooding = NIOLockedValueBox(true)
        let flood = Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 1...20 {
                    group.addTask {
                        try await onThread { () throws -> Int in
                            var open: [TestSocket] = []
                            let user = Array("intruder\(index)".utf8)
                            let deadline = Date().addingTimeInterval(8)
                            while Date() < deadline, open.count < 20 {
                                let socket = try TestSocket(host: "127.0.0.1", port: server.port, from: "127.0.1.\(index)")
                                // A different guess each time, as a brute force goes (identical checks would be merged).
                                let guess = Array("guess\(open.count)".utf8)
                                try socket.send([5, 1, 2, 1, UInt8(user.count)] + user + [UInt8(guess.count)] + guess)
                                open.append(socket)
                                usleep(400_000)
                            }
                            return open.count
                        }
                    }
                }
                var sent = 0
                for try await count in group { sent += count }
                flooding.withLockedValue { $0 = false }
                return sent
            }
        }
        // Good users, while the flood runs: alice (cached) and bob (not) once PAM has answered
        // flooding logins (after their 2 s delay); carol (not cached) and alice again once twice as
        // many have been (the throttle's blocks of all 20 addresses are asserted at the end).
        #expect(await server.process.waitForStderr(containing: "authentication failed", count: 20, timeout: 10))
        var during = try await onThread {
            [try timedLogin(server.port, "alice", "wonderland", echo: echo.port), try timedLogin(server.port, "bob", "builder", echo: echo.port)]
        }
        #expect(await server.process.waitForStderr(containing: "authentication failed", count: 40, timeout: 15))
        during += try await onThread {
            [try timedLogin(server.port, "carol", "c4rol-pw", echo: echo.port), try timedLogin(server.port, "alice", "wonderland", echo: echo.port)]
        }
        let stillFlooding = flooding.withLockedValue { $0 }
        let sent = try await flood.value
        #expect(stillFlooding, "the good logins were measured after the flood")
        #expect(sent >= 200, "\(sent) wrong logins sent")
        for (index, seconds) in during.enumerated() {
            #expect(seconds != nil && seconds! < 1.0, "good login \(index): \(seconds.map { "\($0) s" } ?? "failed")")
        }
        // The flood was real: failures checked by PAM (each answered after its delay) and every
        // flooding address throttled.
        #expect(await server.process.waitForStderr(containing: "authentication failed", count: 60, timeout: 15))
        #expect(await server.process.waitForStderr(containing: "login throttled", count: 20, timeout: 15))
        await echo.stop()
    }

    /// PAM checks the `sallyport-counted` stack has run for `user` so far (given `PAM_RHOST`
    /// `rhost`, when named).
    func checks(of user: String, rhost: String? = nil) -> Int {
        let path = (ProcessInfo.processInfo.environment["SALLYPORT_PAM_FIXTURES"] ?? "") + "/checks.log"
        let log = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return log.split(separator: "\n").filter { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            return fields.first == user && (rhost == nil || fields.dropFirst().first == rhost)
        }.count
    }

    /// Logs in with username/password only (no request), after `header` (a PROXY protocol
    /// header); the RFC 1929 status.
    func loginStatus(_ port: Int, _ user: String, _ password: String, header: [UInt8] = []) throws -> UInt8 {
        let socket = try TestSocket(host: "127.0.0.1", port: port)
        try socket.send(header + [5, 1, 2, 1, UInt8(user.utf8.count)] + Array(user.utf8) + [UInt8(password.utf8.count)] + Array(password.utf8))
        guard try socket.receive(exactly: 2) == [5, 2] else { return 0xFF }
        return try socket.receive(exactly: 2)[1]
    }

    @Test(.timing) func theCacheFromTheFileLastsItsTTLAndAReloadClearsIt() async throws {
        let server = try await server(service: "sallyport-counted", auth: "  cache_ttl: 2s")
        defer { server.process.signal(SIGKILL) }
        let start = checks(of: "dora")
        // Three logins within the lifetime: one PAM check.
        for _ in 0..<3 { #expect(try await onThread { try loginStatus(server.port, "dora", "explorer") } == 0) }
        #expect(checks(of: "dora") - start == 1)
        // A wrong password is checked (and does not touch the entry).
        #expect(try await onThread { try loginStatus(server.port, "dora", "wrong") } != 0)
        #expect(checks(of: "dora") - start == 2)
        // Past the lifetime the next login is checked again.
        try await Task.sleep(for: .milliseconds(2300))  // the lifetime is what is tested
        #expect(try await onThread { try loginStatus(server.port, "dora", "explorer") } == 0)
        #expect(checks(of: "dora") - start == 3)
        #expect(try await onThread { try loginStatus(server.port, "dora", "explorer") } == 0)
        #expect(checks(of: "dora") - start == 3)
        // A reload empties the cache.
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "configuration reloaded"))
        #expect(try await onThread { try loginStatus(server.port, "dora", "explorer") } == 0)
        #expect(checks(of: "dora") - start == 4)
    }

    @Test(.timing) func theThrottleFromTheFileDoublesItsBlockUpToTheMaximum() async throws {
        let server = try await server(service: "sallyport-counted", auth: """
              cache_ttl: 0
              throttle: {max_failures: 2, window: 1m, backoff: 1s, max_backoff: 8s}
            """)
        defer { server.process.signal(SIGKILL) }
        let start = checks(of: "erin")
        var blocks: [String] = []
        // Three rounds (the cap is LoginThrottle's unit tests'): a loaded machine that stalls past
        // max_backoff between rounds would make the throttle forgive, and start again at 1 s.
        for round in 1...3 {
            // Two failures start a block...
            for _ in 0..<2 { #expect(try await onThread { try loginStatus(server.port, "erin", "guess") } != 0) }
            #expect(await server.process.waitForStderr(containing: "login throttled", count: round))
            let warning = server.process.stderr.split(separator: "\n").filter { $0.contains("login throttled") }.last.map(String.init) ?? ""
            let seconds = logfmtFields(warning)["seconds"] ?? "?"
            blocks.append(seconds)
            // ...during which even the right password is refused without a PAM check.
            let checked = checks(of: "erin")
            #expect(try await onThread { try loginStatus(server.port, "erin", "e-pass") } != 0)
            #expect(checks(of: "erin") == checked)
            // The block is what is tested: wait it out.
            try await Task.sleep(for: .milliseconds((Int(seconds) ?? 4) * 1000 + 300))
        }
        #expect(blocks == ["1", "2", "4"])
        #expect(checks(of: "erin") - start == 6)
        // After the last block the right password is taken again.
        #expect(try await onThread { try loginStatus(server.port, "erin", "e-pass") } == 0)
    }

    /// An IPv4 client of a listener on an IPv6 socket (the address `::ffff:127.0.0.1`) reaches
    /// PAM as `127.0.0.1`, the form PAM rules (pam_access, pam_succeed_if) are written in.
    @Test func pamRhostIsThePlainIPv4AddressOfAMappedClient() async throws {
        let server = try await ServerProcess.start("""
            listen: ["[::ffff:127.0.0.1]:0"]
            methods: [username]
            auth:
              pam: {service: sallyport-counted}
              cache_ttl: 0
            """ + loopbackRules)
        defer { server.process.signal(SIGKILL) }
        let before = checks(of: "frank", rhost: "127.0.0.1")
        #expect(try await onThread { try loginStatus(server.port, "frank", "f-pass") } == 0)
        #expect(checks(of: "frank", rhost: "127.0.0.1") == before + 1)
        #expect(checks(of: "frank", rhost: "::ffff:127.0.0.1") == 0)
    }

    @Test func behindABalancerTheHeadersClientIsThrottledAndGivenToPAM() async throws {
        let server = try await ServerProcess.start("""
            listen:
              - address: 127.0.0.1:0
                proxy_protocol: any
                trusted_proxies: [127.0.0.0/8]
            methods: [username]
            auth:
              pam: {service: sallyport-counted}
              cache_ttl: 0
              throttle: {max_failures: 2, window: 1m, backoff: 30s}
            """ + loopbackRules)
        defer { server.process.signal(SIGKILL) }
        // The fixtures' log outlives a run (make sanitize runs the suite twice): count from here.
        let (guessed, colleagues, balancer) = (
            checks(of: "frank", rhost: "192.0.2.7"), checks(of: "frank", rhost: "198.51.100.9"), checks(of: "frank", rhost: "127.0.0.1")
        )
        let guesser = ProxyHeaderBytes.v1(source: "192.0.2.7")
        let colleague = ProxyHeaderBytes.v2(source: [198, 51, 100, 9], port: 50000)
        // Two wrong passwords from one client behind the balancer: checked with its address as
        // PAM_RHOST, then that client is blocked...
        for _ in 0..<2 { #expect(try await onThread { try loginStatus(server.port, "frank", "guess", header: guesser) } != 0) }
        #expect(await server.process.waitForStderr(containing: "login throttled"))
        let warning = server.process.stderr.split(separator: "\n").first { $0.contains("login throttled") }.map(String.init) ?? ""
        #expect(logfmtFields(warning)["client"] == "192.0.2.7", "\(warning)")
        #expect(checks(of: "frank", rhost: "192.0.2.7") - guessed == 2)
        // ...even with the right password, unchecked; another client through the same balancer
        // address logs in, checked as itself.
        #expect(try await onThread { try loginStatus(server.port, "frank", "f-pass", header: guesser) } != 0)
        #expect(checks(of: "frank", rhost: "192.0.2.7") - guessed == 2)
        #expect(try await onThread { try loginStatus(server.port, "frank", "f-pass", header: colleague) } == 0)
        #expect(checks(of: "frank", rhost: "198.51.100.9") - colleagues == 1)
        #expect(checks(of: "frank", rhost: "127.0.0.1") == balancer, "the balancer's address never reaches PAM")
    }

    @Test(arguments: [false, true])
    func perUserMetricsOnlyWhenAskedFor(perUser: Bool) async throws {
        let echo = try await TargetServer.echo()
        let server = try await server(service: "sallyport-test", auth: "admin:\n  listen: 127.0.0.1:0\n  per_user_metrics: \(perUser)")
        defer { server.process.signal(SIGKILL) }
        #expect(try await onThread { try timedLogin(server.port, "alice", "wonderland", echo: echo.port) } != nil)
        #expect(await server.process.waitForStderr(containing: "msg=session"))
        #expect(await server.process.waitForStderr(containing: "admin listening"))
        let line = server.process.stderr.split(separator: "\n").first { $0.contains("admin listening") }.map(String.init) ?? ""
        let admin = try #require(Int(logfmtFields(line)["address"]?.split(separator: ":").last ?? ""))
        let samples = prometheusSamples(try await onThread { try httpRequest(port: admin, "/metrics").body })
        #expect(samples["sallyport_auth_attempts_total{result=\"success\"}"] == 1)
        #expect(samples["sallyport_user_sessions_total{user=\"alice\"}"] == (perUser ? 1 : nil), "\(samples)")
        #expect(samples["sallyport_user_bytes_total{user=\"alice\",direction=\"up\"}"] == (perUser ? 1 : nil))
        await echo.stop()
    }

    /// The attack: hundreds of failed logins under names a stranger types (and passwords typed
    /// into the user field). None becomes a series; authenticated users do, up to the limit, and
    /// the rest count under `other`.
    @Test func failedLoginsNeverBecomeSeriesAndUserSeriesAreCapped() async throws {
        let echo = try await TargetServer.echo()
        let server = try await server(
            service: "sallyport-test", auth: "admin:\n  listen: 127.0.0.1:0\n  per_user_metrics: true\n  per_user_metrics_limit: 2")
        defer { server.process.signal(SIGKILL) }
        #expect(await server.process.waitForStderr(containing: "admin listening"))
        let line = server.process.stderr.split(separator: "\n").first { $0.contains("admin listening") }.map(String.init) ?? ""
        let admin = try #require(Int(logfmtFields(line)["address"]?.split(separator: ":").last ?? ""))
        let before = try await onThread { try httpRequest(port: admin, "/metrics").body }
        let refused = try await onThread { () throws -> Int in
            var refused = 0
            for index in 0..<400 {
                // From 40 addresses, so that the throttle answers some and PAM the others.
                let socket = try TestSocket(host: "127.0.0.1", port: server.port, from: "127.0.3.\(index % 40 + 1)")
                let name = Array("stranger-\(UInt64.random(in: 0...UInt64.max))\"\n".utf8)
                try socket.send([5, 1, 2, 1, UInt8(name.count)] + name + [1, 0x78])
                if try socket.receive(exactly: 4) != [5, 2, 1, 0] { refused += 1 }
            }
            return refused
        }
        #expect(refused == 400)
        for (user, password) in [("alice", "wonderland"), ("bob", "builder"), ("carol", "c4rol-pw")] {
            #expect(try await onThread { try timedLogin(server.port, user, password, echo: echo.port) } != nil)
        }
        #expect(await server.process.waitForStderr(containing: "msg=session", count: 403))
        let after = try await onThread { try httpRequest(port: admin, "/metrics").body }
        #expect(!after.contains("stranger"), "a failed login's name is no label")
        let samples = prometheusSamples(after)
        #expect(samples["sallyport_user_sessions_total{user=\"alice\"}"] == 1 && samples["sallyport_user_sessions_total{user=\"bob\"}"] == 1)
        #expect(samples["sallyport_user_sessions_total{user=\"other\"}"] == 1 && samples["sallyport_user_sessions_total{user=\"carol\"}"] == nil)
        let labels = { (text: String) in
            Set(text.split(separator: "\n").compactMap { line in line.range(of: "user=\"").map { line[$0.upperBound...].prefix { $0 != "\"" } } })
        }
        #expect(labels(before).isEmpty && labels(after) == ["alice", "bob", "other"], "\(labels(after))")
        await echo.stop()
    }
}
