import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Testing

/// One HTTP/1.1 request with a `Host` of the caller's choosing (nil: none at all).
func httpRequest(port: Int, _ path: String, method: String = "GET", host: String?, headers: [String: String] = [:]) throws -> (status: Int, body: String, head: String) {
    let socket = try TestSocket(host: "127.0.0.1", port: port)
    var request = "\(method) \(path) HTTP/1.1\r\n" + (host.map { "Host: \($0)\r\n" } ?? "") + "Connection: close\r\n"
    for (name, value) in headers { request += "\(name): \(value)\r\n" }
    try socket.send(Array((request + "\r\n").utf8))
    let response = String(decoding: try socket.receiveUntilEOF(), as: UTF8.self)
    let status = Int(response.split(separator: " ", maxSplits: 2).dropFirst().first ?? "") ?? 0
    let split = response.range(of: "\r\n\r\n")
    return (status, split.map { String(response[$0.upperBound...]) } ?? "", split.map { String(response[..<$0.lowerBound]) } ?? response)
}

/// The admin listener against what an attacker (or a web page the operator visits) can do:
/// reloads that take it away, foreign `Host`s, tokens in URLs, floods of idle connections.
@Suite(.system, .timeLimit(.minutes(3))) struct AdminAttackTests {
    static let token = "s3cret-token-0123456789"

    /// The port of the `admin listening` line number `index` (a reload that moves it writes another).
    func adminPort(_ server: ServerProcess, line index: Int = 0) async throws -> Int {
        #expect(await server.process.waitForStderr(containing: "admin listening", count: index + 1, timeout: 20))
        let lines = server.process.stderr.split(separator: "\n").filter { $0.contains("admin listening") }
        return try #require(Int(logfmtFields(String(lines[index]))["address"]?.split(separator: ":").last ?? ""))
    }

    @Test func aReloadThatRemovesTheAdminClosesItsSocketAndEveryConnectionItAccepted() async throws {
        let server = try await ServerProcess.start("listen: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.1:0\n  token: \(Self.token)\n")
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        #expect(try await onThread { try httpRequest(port: admin, "/sessions", host: "127.0.0.1").status } == 401)
        // A keep-alive connection opened before the reload.
        let kept = try await onThread { () throws -> TestSocket in
            let socket = try TestSocket(host: "127.0.0.1", port: admin, timeout: 10)
            try socket.send(Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
            _ = try socket.receive(exactly: 12)
            return socket
        }
        try "listen: [127.0.0.1:0]\n".write(toFile: server.configPath, atomically: true, encoding: .utf8)
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "configuration reloaded"))
        #expect(server.process.stderr.contains("admin listener closed by the reload"))
        // The kept connection is closed (nothing answered on it), and nobody can connect again.
        #expect(try await onThread { kept.waitForClose() })
        #expect(try await onThread { (try? TestSocket(host: "127.0.0.1", port: admin, timeout: 2)) == nil })
    }

    @Test func aReloadThatMovesTheAdminServesOnlyTheNewAddressUnderTheNewToken() async throws {
        let server = try await ServerProcess.start("listen: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.1:0\n")
        defer { server.process.signal(SIGKILL) }
        let first = try await adminPort(server)
        #expect(try await onThread { try httpRequest(port: first, "/sessions", host: "127.0.0.1").status } == 200)
        try "listen: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.2:0\n  token: \(Self.token)\n".write(toFile: server.configPath, atomically: true, encoding: .utf8)
        server.process.signal(SIGHUP)
        let second = try await adminPort(server, line: 1)
        #expect(try await onThread { (try? TestSocket(host: "127.0.0.1", port: first, timeout: 2)) == nil }, "the old address is closed")
        @Sendable func get(_ headers: [String: String]) throws -> Int {
            let socket = try TestSocket(host: "127.0.0.2", port: second)
            var request = "GET /sessions HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: close\r\n"
            for (name, value) in headers { request += "\(name): \(value)\r\n" }
            try socket.send(Array((request + "\r\n").utf8))
            return Int(String(decoding: try socket.receiveUntilEOF(), as: UTF8.self).split(separator: " ").dropFirst().first ?? "") ?? 0
        }
        let (without, with) = try await onThread { (try get([:]), try get(["Authorization": "Bearer \(Self.token)"])) }
        #expect(without == 401 && with == 200)
        // A reload that cannot bind (a port another socket holds) fails and keeps the running listener.
        let holder = try RefusingPort(listenBacklog: 1)
        try "listen: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.1:\(holder.port)\n".write(toFile: server.configPath, atomically: true, encoding: .utf8)
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "reload failed"))
        #expect(try await onThread { try get([:]) } == 401, "still there, at its port, still asking for the token")
    }

    @Test func aForeignHostIsAnswered421AndOwnNamesPass() async throws {
        let server = try await ServerProcess.start("listen: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.1:0\n  hosts: [proxy-admin.example]\n")
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        let foreign = ["rebind.attacker.example", "rebind.attacker.example:\(admin)", "127.0.0.1.attacker.example", "localhost.attacker.example",
                       "xn--bcher-kva.example", "b\u{00FC}cher.example", "2130706433"]
        let routes = [("GET", "/sessions"), ("GET", "/metrics"), ("GET", "/usage"), ("DELETE", "/sessions/1"), ("DELETE", "/usage/alice"), ("GET", "/")]
        let answers = try await onThread {
            try foreign.flatMap { host in try routes.map { (host, $0.1, try httpRequest(port: admin, $0.1, method: $0.0, host: host).status) } }
        }
        for (host, path, status) in answers { #expect(status == 421, "\(host) \(path): \(status)") }
        let own = ["127.0.0.1", "127.0.0.1:\(admin)", "localhost", "LOCALHOST:\(admin)", "[::1]:\(admin)", "proxy-admin.example", "Proxy-Admin.Example:80"]
        let ok = try await onThread { try own.map { ($0, try httpRequest(port: admin, "/sessions", host: $0).status) } }
        for (host, status) in ok { #expect(status == 200, "\(host): \(status)") }
        // No browser sends a request without Host; a script that does is not a rebinding page.
        #expect(try await onThread { try httpRequest(port: admin, "/healthz", host: nil).status } == 200)
        // CR, LF and NUL in Host never make a response: the request is refused whole.
        for host in ["a\rb", "a\0b"] {
            let status = try await onThread { try httpRequest(port: admin, "/sessions", host: host).status }
            #expect(status == 400 || status == 421 || status == 0, "\(host.debugDescription): \(status)")
        }
    }

    @Test func publicRoutesAreTheHealthChecksThePACAndTheStaticPageAndATokenInTheURLOpensNothing() async throws {
        let server = try await ServerProcess.start("listen: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.1:0\n  token: \(Self.token)\n")
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        let open = ["/healthz", "/readyz", "/proxy.pac", "/", "/status.js", "/status.css"]
        let statuses = try await onThread { try open.map { ($0, try httpRequest(port: admin, $0, host: "127.0.0.1").status) } }
        for (path, status) in statuses { #expect(status == 200, "\(path): \(status)") }
        let byQuery = try await onThread {
            try ["/sessions", "/metrics", "/status", "/usage"].map { try httpRequest(port: admin, $0 + "?token=\(Self.token)", host: "127.0.0.1").status }
        }
        #expect(byQuery == [401, 401, 401, 401])
        // The page: a strict policy, no inline script, nothing that reads the token from the query.
        let page = try await onThread { try httpRequest(port: admin, "/", host: "127.0.0.1") }
        let policy = page.head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-security-policy:") }.map(String.init) ?? ""
        #expect(policy.contains("default-src 'none'") && policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "\(page.head)")
        #expect(!policy.contains("unsafe-inline") && !page.body.contains("<script>") && !page.body.contains("<style>"))
        let script = try await onThread { try httpRequest(port: admin, "/status.js", host: "127.0.0.1").body }
        #expect(script.contains("location.hash") && !script.contains("location.search"))
    }

    /// The attack: a descriptor limit of 256, 366 idle connections to the admin port, then a
    /// SOCKS client. The admin listener's cap keeps it to `max_connections`; the rest are closed
    /// at accept, and the SOCKS service answers.
    @Test func aFloodOfIdleAdminConnectionsLeavesTheSOCKSServiceAnswering() async throws {
        let echo = try await TargetServer.echo()
        let (server, socksPort) = try await serverWithDescriptorLimit(
            256, "listen: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.1:0\n  max_connections: 32\n" + loopbackRules, listen: false)
        defer { server.signal(SIGKILL) }
        let adminLine = server.stderr.split(separator: "\n").first { $0.contains("admin listening") }.map(String.init) ?? ""
        let admin = try #require(Int(logfmtFields(adminLine)["address"]?.split(separator: ":").last ?? ""))
        let flood = try await onThread { try (0..<366).map { _ in try TestSocket(host: "127.0.0.1", port: admin, timeout: 5) } }
        // Those past the cap are closed by the server: at most 32 stay open.
        let stillOpen = try await onThread { flood.filter { !$0.waitForClose(timeout: 0.05) }.count }
        #expect(stillOpen <= 32, "\(stillOpen) admin connections held")
        let code = try await onThread { try TestSocket(host: "127.0.0.1", port: socksPort, timeout: 10).socksConnect(to: loopback4(echo.port)).code }
        #expect(code == .succeeded)
        withExtendedLifetime(flood) {}
        await echo.stop()
    }

    /// The timeouts come from the file: a request sent a byte at a time is cut at
    /// `request_timeout`, a silent keep-alive connection at `idle_timeout`.
    @Test(.timing) func aSlowRequestAndAnIdleConnectionAreClosedOnTime() async throws {
        let server = try await ServerProcess.start("listen: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.1:0\n  idle_timeout: 1s\n  request_timeout: 1s\n")
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        let (slowClosed, slowAfter, idleClosed, idleAfter) = try await onThread { () throws -> (Bool, Double, Bool, Double) in
            let slow = try TestSocket(host: "127.0.0.1", port: admin, timeout: 10)
            let began = NIODeadline.now()
            try slow.send(Array("GET /sessions HTTP/1.1\r\n".utf8))
            let slowClosed = slow.waitForClose(timeout: 5)
            let slowAfter = Double((NIODeadline.now() - began).nanoseconds) / 1e9
            let idle = try TestSocket(host: "127.0.0.1", port: admin, timeout: 10)
            let idleBegan = NIODeadline.now()
            let idleClosed = idle.waitForClose(timeout: 5)
            return (slowClosed, slowAfter, idleClosed, Double((NIODeadline.now() - idleBegan).nanoseconds) / 1e9)
        }
        #expect(slowClosed && slowAfter >= 0.9 && slowAfter < 3, "slow request closed after \(slowAfter) s")
        #expect(idleClosed && idleAfter >= 0.9 && idleAfter < 3, "idle connection closed after \(idleAfter) s")
    }
}
