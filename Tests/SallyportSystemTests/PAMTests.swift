import SallyportTestSupport
import Foundation
import NIOPosix
import NIOCore
import SOCKSProtocol
import Sallyport
import SallyportAuth
import SallyportPolicy
import Testing

/// True when the test process runs under pam_wrapper (as `make test` runs it).
let underPAMWrapper = ProcessInfo.processInfo.environment["PAM_WRAPPER"] == "1"

/// Logs in over the wire with username/password and asks to CONNECT; returns the RFC 1929 status
/// and, on success, the CONNECT reply code.
func socksLogin(
    proxyPort: Int, user: [UInt8], password: [UInt8], destination: SOCKSEndpoint, from source: String? = nil
) throws -> (status: UInt8, reply: SOCKSReplyCode?, closed: Bool) {
    let socket = try TestSocket(host: "127.0.0.1", port: proxyPort, from: source)
    try socket.send([5, 1, 2])
    try expectBytesHelper(try socket.receive(exactly: 2), [5, 2])
    try socket.send([1, UInt8(user.count)] + user + [UInt8(password.count)] + password)
    let status = try socket.receive(exactly: 2)
    guard status == [1, 0] else { return (status[1], nil, socket.waitForClose()) }
    var request = ByteBuffer()
    request.writeSOCKSRequest(SOCKSRequest(command: .connect, destination: destination))
    try socket.send(Array(request.readableBytesView))
    return (0, try socket.readReply().code, false)
}

/// A PySocks client (python3 SCRIPT PROXY_PORT TARGET_PORT USER PASSWORD): logs in, connects to
/// `target`, sends `message` and prints the echo; exits 3 when the proxy refuses.
func pySocksLoginScript(target: String, message: String) throws -> String {
    try temporaryFile("""
        import sys, socks
        s = socks.socksocket()
        s.set_proxy(socks.SOCKS5, "127.0.0.1", int(sys.argv[1]), rdns=True, username=sys.argv[3], password=sys.argv[4])
        s.settimeout(10)
        try:
            s.connect(("\(target)", int(sys.argv[2])))
        except socks.ProxyError as error:
            print("refused", error)
            sys.exit(3)
        s.sendall(b"\(message)")
        print(s.recv(100).decode())
        """, suffix: ".py")
}

/// A proxy whose logins go through real PAM (`service`) behind a throttle; method username only,
/// plus a method-none listener when `extraListener`.
func pamProxy(
    service: String = "sallyport-test", threads: Int = 4, maxPending: Int = 64, throttle: LoginThrottle.Configuration = .init(maxFailures: 0),
    extraListener: Bool = false, policy: Policy? = nil
) async throws -> (TestProxy, PAMAuthenticator) {
    let pam = PAMAuthenticator(configuration: .init(service: service, threads: threads, maxPending: maxPending, maxPendingPerClient: maxPending))
    let logs = LogCapture()
    let authenticator = ThrottledAuthenticator(base: pam, configuration: throttle, logger: logs.logger())
    let proxy = try await TestProxy.start(
        configure: {
            $0.listeners = [.init(host: "127.0.0.1", port: 0, methods: [.usernamePassword])]
            if extraListener { $0.listeners.append(.init(host: "127.0.0.1", port: 0, methods: [.none])) }
            if let policy { $0.policy = policy }
        },
        authenticator: authenticator)
    return (proxy, pam)
}

@Suite(.system, .timeLimit(.minutes(3)), .enabled(if: underPAMWrapper, "needs pam_wrapper: run through `make test`"))
struct PAMTests {
    @Test func rightPasswordPassesWithGroups() async throws {
        let pam = PAMAuthenticator(configuration: .init(service: "sallyport-test"))
        let client = try SocketAddress(ipAddress: "127.0.0.1", port: 5)
        let result = try await pam.authenticate(
            AuthenticationRequest(username: "alice", password: Array("wonderland".utf8), client: client),
            on: MultiThreadedEventLoopGroup.singleton.next()
        ).get()
        #expect(result == .success(Identity(user: "alice", groups: ["alice", "engineers"])))
        await pam.shutdown()
    }

    @Test func groupsTooLargeForAFixedBufferAreStillFound() async throws {
        // carol is in "crowd", whose group entry (96 KB) does not fit a 64 KiB lookup buffer.
        let pam = PAMAuthenticator(configuration: .init(service: "sallyport-test"))
        let result = try await pam.authenticate(
            AuthenticationRequest(username: "carol", password: Array("c4rol-pw".utf8), client: nil),
            on: MultiThreadedEventLoopGroup.singleton.next()
        ).get()
        #expect(result == .success(Identity(user: "carol", groups: ["carol", "contractors", "crowd"])))
        #expect(canonicalUserName("carol") == "carol")
        #expect(canonicalUserName("nobody-known-here") == "nobody-known-here")
        await pam.shutdown()
    }

    @Test(arguments: [
        ("sallyport-test", "alice", "wrong"),
        ("sallyport-test", "nobody-here", "wonderland"),
        ("sallyport-locked", "locked", "locked-pw"),
    ])
    func wrongCredentialsAndRefusedAccountsFail(service: String, user: String, password: String) async throws {
        let pam = PAMAuthenticator(configuration: .init(service: service))
        let result = try await pam.authenticate(
            AuthenticationRequest(username: user, password: Array(password.utf8), client: nil),
            on: MultiThreadedEventLoopGroup.singleton.next()
        ).get()
        guard case .failure(let reason) = result else {
            Issue.record("expected a failure, got \(result)")
            return
        }
        #expect(!reason.contains(password))
        if service == "sallyport-locked" { #expect(reason.contains("acct_mgmt")) }
        await pam.shutdown()
    }

    @Test func overTheWireRightPasswordConnectsAndWrongOnesClose() async throws {
        let echo = try await TargetServer.echo()
        let (proxy, pam) = try await pamProxy()
        let destination = SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port))
        let outcomes = try await onThread {
            [
                try socksLogin(proxyPort: proxy.port, user: Array("alice".utf8), password: Array("wonderland".utf8), destination: destination),
                try socksLogin(proxyPort: proxy.port, user: Array("alice".utf8), password: Array("wonderlan".utf8), destination: destination),
                try socksLogin(proxyPort: proxy.port, user: Array("mallory".utf8), password: Array("x".utf8), destination: destination),
                try socksLogin(proxyPort: proxy.port, user: Array("alice".utf8), password: [], destination: destination),
                try socksLogin(proxyPort: proxy.port, user: [], password: Array("wonderland".utf8), destination: destination),
            ]
        }
        #expect(outcomes[0].status == 0 && outcomes[0].reply == .succeeded)
        for outcome in outcomes.dropFirst() {
            #expect(outcome.status != 0)
            #expect(outcome.closed)
        }
        // Empty fields never reach PAM: three transactions, for the three complete logins.
        #expect(pam.transactionsStarted == 3)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("msg=\"authentication succeeded\"") && $0.contains("user=alice") } })
        #expect(proxy.logs.lines.contains { $0.contains("msg=\"authentication failed\"") && $0.contains("user=mallory") && $0.contains("client=127.0.0.1:") })
        #expect(!proxy.logs.text.contains("wonderland"))
        #expect(!proxy.logs.text.contains("wonderlan"))
        await proxy.stop()
        await pam.shutdown()
        await echo.stop()
    }

    @Test func groupRulesUseTheGroupsPAMAndNSSGive() async throws {
        let echo = try await TargetServer.echo()
        // Engineers (alice and bob in the NSS fixture) may reach the loopback target; carol may not.
        let policy = Policy(rules: [
            EgressRule(name: "engineers-local", action: .allow, who: [.group("engineers")], to: [.block(CIDR("127.0.0.0/8")!)])
        ])
        let (proxy, pam) = try await pamProxy(policy: policy)
        let destination = SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port))
        let alice = try await onThread { try socksLogin(proxyPort: proxy.port, user: Array("alice".utf8), password: Array("wonderland".utf8), destination: destination) }
        let carol = try await onThread { try socksLogin(proxyPort: proxy.port, user: Array("carol".utf8), password: Array("c4rol-pw".utf8), destination: destination) }
        #expect(alice.status == 0 && alice.reply == .succeeded)
        #expect(carol.status == 0 && carol.reply == .notAllowed)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("user=alice") && $0.contains("rule=engineers-local") } })
        await proxy.stop()
        await pam.shutdown()
        await echo.stop()
    }

    @Test func credentialCacheMakesRepeatedLoginsCostOnePAMCheck() async throws {
        let echo = try await TargetServer.echo()
        let pam = PAMAuthenticator(configuration: .init(service: "sallyport-test"))
        let chain = ThrottledAuthenticator(
            base: CachingAuthenticator(base: pam, lifetime: .seconds(30)), configuration: .init(), logger: LogCapture().logger())
        let proxy = try await TestProxy.start(
            configure: { $0.listeners = [.init(host: "127.0.0.1", port: 0, methods: [.usernamePassword])] }, authenticator: chain)
        let destination = SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port))
        for _ in 0..<20 {
            let outcome = try await onThread { try socksLogin(proxyPort: proxy.port, user: Array("bob".utf8), password: Array("builder".utf8), destination: destination) }
            #expect(outcome.status == 0 && outcome.reply == .succeeded)
        }
        #expect(pam.transactionsStarted == 1)
        // A wrong password is still checked, and refused.
        let wrong = try await onThread { try socksLogin(proxyPort: proxy.port, user: Array("bob".utf8), password: Array("b0b".utf8), destination: destination) }
        #expect(wrong.status != 0)
        #expect(pam.transactionsStarted == 2)
        await proxy.stop()
        await pam.shutdown()
        await echo.stop()
    }

    @Test func lockedAccountIsRefusedOverTheWire() async throws {
        let (proxy, pam) = try await pamProxy(service: "sallyport-locked")
        let outcome = try await onThread {
            try socksLogin(proxyPort: proxy.port, user: Array("locked".utf8), password: Array("locked-pw".utf8), destination: .unspecified)
        }
        #expect(outcome.status != 0)
        #expect(outcome.closed)
        await proxy.stop()
        await pam.shutdown()
    }

    @Test func curlAndPySocksWithRealPAM() async throws {
        let http = try await TargetServer.start { HTTPResponder(body: "pam ok\n") }
        let echo = try await TargetServer.echo()
        let (proxy, pam) = try await pamProxy()
        let curl = try #require(which("curl"))
        let env = ["http_proxy": "", "all_proxy": "", "ALL_PROXY": ""]
        let good = try await runProcess(curl, ["-sS", "--max-time", "10", "-x", "socks5h://bob:builder@127.0.0.1:\(proxy.port)", "http://localhost:\(http.port)/"], environment: env)
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.stdout == "pam ok\n")
        let bad = try await runProcess(curl, ["-sS", "--max-time", "10", "-x", "socks5h://bob:b0ilder@127.0.0.1:\(proxy.port)", "http://localhost:\(http.port)/"], environment: env)
        #expect(bad.status != 0)
        #expect(bad.stdout.isEmpty)

        let path = try pySocksLoginScript(target: "127.0.0.1", message: "ping through pam")
        let pyGood = try await runProcess("/usr/bin/python3", [path, "\(proxy.port)", "\(echo.port)", "carol", "c4rol-pw"])
        #expect(pyGood.stdout == "ping through pam\n", "\(pyGood.stderr)")
        let pyBad = try await runProcess("/usr/bin/python3", [path, "\(proxy.port)", "\(echo.port)", "carol", "wrong"])
        #expect(pyBad.status == 3)
        await proxy.stop()
        await pam.shutdown()
        await http.stop()
        await echo.stop()
    }

    @Test func fiftyConcurrentLoginsSucceed() async throws {
        let echo = try await TargetServer.echo()
        let (proxy, pam) = try await pamProxy(threads: 4, maxPending: 64)
        let destination = SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port))
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 1...50 {
                group.addTask {
                    try await onThread {
                        let outcome = try socksLogin(
                            proxyPort: proxy.port, user: Array("user\(index)".utf8), password: Array("pass\(index)".utf8),
                            destination: destination)
                        return outcome.status == 0 && outcome.reply == .succeeded
                    }
                }
            }
            var results: [Bool] = []
            for try await result in group { results.append(result) }
            return results
        }
        #expect(results.count == 50)
        #expect(results.allSatisfy { $0 })
        #expect(pam.transactionsStarted == 50)
        await proxy.stop()
        await pam.shutdown()
        await echo.stop()
    }

    @Test func checkAuthReportsRightAndWrongPasswords() async throws {
        let right = try await runProcess(sallyportExecutable(), ["check-auth", "alice", "--service", "sallyport-test"], input: Data("wonderland\n".utf8), wrappers: true)
        #expect(right.status == 0, "\(right.stderr)")
        #expect(right.stdout.contains("result: accepted"))
        #expect(right.stdout.contains("groups: alice, engineers"))
        let wrong = try await runProcess(sallyportExecutable(), ["check-auth", "alice", "--service", "sallyport-test"], input: Data("nope\n".utf8), wrappers: true)
        #expect(wrong.status == 1)
        #expect(wrong.stdout.contains("result: refused"))
        #expect(wrong.stdout.contains("pam: authenticate: Authentication failure"))
        #expect(!wrong.stdout.contains("nope") && !wrong.stderr.contains("nope"))
        // The service comes from the configuration file.
        let config = try temporaryFile("auth:\n  pam:\n    service: sallyport-locked\n")
        let locked = try await runProcess(sallyportExecutable(), ["check-auth", "locked", "--config", config], input: Data("locked-pw\n".utf8), wrappers: true)
        #expect(locked.status == 1)
        #expect(locked.stdout.contains("pam: acct_mgmt:"))
    }
}

/// Polls `condition` every 10 ms for up to `timeout` seconds.
func waitUntil(timeout: Double, _ condition: @Sendable () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(timeout * sanitizerSlowdown)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}
