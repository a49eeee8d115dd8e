import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Testing

/// One HTTP/1.1 request over a plain socket (Connection: close); the status code and the body.
func httpRequest(port: Int, _ path: String, method: String = "GET", headers: [String: String] = [:]) throws -> (status: Int, body: String) {
    let socket = try TestSocket(host: "127.0.0.1", port: port)
    var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    for (name, value) in headers { request += "\(name): \(value)\r\n" }
    try socket.send(Array((request + "\r\n").utf8))
    let response = String(decoding: try socket.receiveUntilEOF(), as: UTF8.self)
    let status = Int(response.split(separator: " ", maxSplits: 2).dropFirst().first ?? "") ?? 0
    let body = response.range(of: "\r\n\r\n").map { String(response[$0.upperBound...]) } ?? ""
    return (status, body)
}

/// The admin port from the server's `admin listening` line.
func adminPort(of server: ServerProcess) async throws -> Int {
    #expect(await server.process.waitForStderr(containing: "admin listening"))
    let line = server.process.stderr.split(separator: "\n").first { $0.contains("admin listening") }.map(String.init) ?? ""
    return try #require(Int(logfmtFields(line)["address"]?.split(separator: ":").last ?? ""))
}

/// Samples of a Prometheus exposition: `name{labels}` to value.
func prometheusSamples(_ text: String) -> [String: Double] {
    var samples: [String: Double] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
        samples[String(line[..<space])] = value
    }
    return samples
}

/// The admin listener of the real binary: metrics against the access log, sessions, PAC, tokens.
@Suite(.system, .timeLimit(.minutes(3))) struct AdminTests {
    static let adminConfig = """
        listen: [127.0.0.1:0]
        admin:
          listen: 127.0.0.1:0
          pac: {direct: [.corp.example, 10.0.0.0/8]}

        """ + loopbackRules

    func adminPort(_ server: ServerProcess) async throws -> Int {
        try await SallyportSystemTests.adminPort(of: server)
    }

    /// A CONNECT session to the echo server, left open.
    func openSession(_ server: ServerProcess, echo: TargetServer) async throws -> TestSocket {
        try await onThread { () throws -> TestSocket in
            let socket = try TestSocket(host: "127.0.0.1", port: server.port, timeout: 60)
            guard try socket.socksConnect(to: loopback4(echo.port)).code == .succeeded else { throw TestSocketError("connect", errno: 0) }
            return socket
        }
    }

    @Test func metricsAfterTrafficMatchTheAccessLog() async throws {
        let echo = try await TargetServer.echo()
        let udpEcho = try await UDPEchoServer.start()
        let server = try await ServerProcess.start(Self.adminConfig)
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        // Traffic: three CONNECTs with payloads, one denied by the guard, one UDP association.
        try await onThread {
            for size in [100, 2000, 30_000] {
                let socket = try TestSocket(host: "127.0.0.1", port: server.port)
                guard try socket.socksConnect(to: loopback4(echo.port), payload: patternBytes(count: size, seed: 1)).code == .succeeded else { continue }
                socket.shutdownWrite()
                _ = try socket.receiveUntilEOF()
            }
            _ = try TestSocket(host: "127.0.0.1", port: server.port).socksConnect(to: SOCKSEndpoint(host: .ipv4(.init(10, 9, 9, 9)), port: 80))
            let (control, reply) = try udpAssociate(proxyPort: server.port)
            let client = try TestUDPSocket()
            for byte in [UInt8(1), 2] {
                try client.send(TestUDPSocket.packet(to: loopback4(udpEcho.port), [byte]), to: try reply.bound.testAddress)
                _ = client.receive()
            }
            _ = control
        }
        #expect(await server.process.waitForStderr(containing: "msg=session", count: 5))
        let sessions = server.process.stderr.split(separator: "\n").filter { $0.contains("msg=session") }.map { logfmtFields(String($0)) }
        let (status, body) = try await onThread { try httpRequest(port: admin, "/metrics") }
        #expect(status == 200)
        let samples = prometheusSamples(body)
        // Every family is there.
        for family in [
            "sallyport_sessions_active", "sallyport_sessions_total", "sallyport_relay_bytes_total", "sallyport_auth_attempts_total",
            "sallyport_pam_queue_depth", "sallyport_pam_duration_seconds", "sallyport_dns_lookups_total", "sallyport_dns_duration_seconds",
            "sallyport_udp_datagrams_total", "sallyport_policy_denials_total", "sallyport_config_reloads_total", "sallyport_build_info",
        ] {
            #expect(body.contains("# TYPE \(family) "), "no \(family) in \(body)")
        }
        // The Grafana dashboard asks only for series that exist.
        let dashboard = try String(contentsOfFile: packageRoot() + "/packaging/grafana/sallyport.json", encoding: .utf8)
        let asked = Set(dashboard.matches(of: /sallyport_[a-z_]+/).map { String($0.output).replacingOccurrences(of: "_bucket", with: "") })
        #expect(asked.count >= 10)
        for name in asked { #expect(body.contains("# TYPE \(name) "), "the dashboard asks for \(name)") }
        // The counts are the access log's.
        let total = samples.filter { $0.key.hasPrefix("sallyport_sessions_total{") }.values.reduce(0, +)
        #expect(Int(total) == sessions.count, "\(samples)")
        let up = sessions.compactMap { Double($0["up"] ?? "") }.reduce(0, +)
        let down = sessions.compactMap { Double($0["down"] ?? "") }.reduce(0, +)
        #expect(samples["sallyport_relay_bytes_total{direction=\"up\"}"] == up)
        #expect(samples["sallyport_relay_bytes_total{direction=\"down\"}"] == down)
        #expect(samples["sallyport_sessions_total{command=\"connect\",end=\"denied\"}"] == 1)
        #expect(samples["sallyport_policy_denials_total{rule=\"guard:10.0.0.0/8\"}"] == 1)
        #expect(samples["sallyport_udp_datagrams_total{direction=\"up\",outcome=\"relayed\"}"] == 2)
        #expect(samples["sallyport_build_info{version=\"\(sallyportVersionForTests)\"}"] == 1)
        await echo.stop()
        await udpEcho.stop()
    }

    @Test func aRunningSessionIsListedAndDeleteEndsIt() async throws {
        let echo = try await TargetServer.echo()
        let server = try await ServerProcess.start(Self.adminConfig)
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        let running = try await onThread { () throws -> TestSocket in
            let socket = try TestSocket(host: "127.0.0.1", port: server.port)
            guard try socket.socksConnect(to: loopback4(echo.port), payload: [1, 2, 3]).code == .succeeded else { throw TestSocketError("connect", errno: 0) }
            _ = try socket.receive(exactly: 3)
            return socket
        }
        let (status, body) = try await onThread { try httpRequest(port: admin, "/sessions") }
        #expect(status == 200)
        let list = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [[String: Any]])
        #expect(list.count == 1)
        let session = try #require(list.first)
        #expect(session["command"] as? String == "connect")
        #expect(session["destination"] as? String == "127.0.0.1:\(echo.port)")
        #expect(session["bytes_up"] as? Int == 3 && session["bytes_down"] as? Int == 3, "\(session)")
        let id = try #require(session["id"] as? String)

        #expect(try await onThread { try httpRequest(port: admin, "/sessions/\(id)", method: "DELETE").status } == 200)
        let closed = try await onThread { running.waitForClose() }
        #expect(closed)
        #expect(await server.process.waitForStderr(containing: "end=closed_by_admin"))
        #expect(try await onThread { try httpRequest(port: admin, "/sessions/\(id)", method: "DELETE").status } == 404)
        #expect(try await onThread { try httpRequest(port: admin, "/sessions").body }.trimmingCharacters(in: .whitespacesAndNewlines) == "[]")
        await echo.stop()
    }

    @Test func theStatusPageRendersInHeadlessChromiumAndItsCloseButtonEndsASession() async throws {
        let chromium = try #require(which("chromium"), "chromium is not installed (make test installs it)")
        let echo = try await TargetServer.echo()
        let server = try await ServerProcess.start(Self.adminConfig)
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        let running = try await openSession(server, echo: echo)
        // Debian's Python, which has python3-websocket (a python3 earlier on PATH may not).
        let result = try await runProcess(
            "/usr/bin/python3",
            [packageRoot() + "/Tests/Integration/status_page.py", chromium, "http://127.0.0.1:\(admin)/"], timeout: 120)
        let page = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] ?? [:]
        #expect(page["error"] == nil, "\(page) \(result.stderr)")
        #expect(page["loaded"] as? Bool == true, "\(page)")
        #expect(page["title"] as? String == "Sallyport status")
        // The running session is listed, and counted under its listener and command.
        #expect((page["sessions"] as? [String])?.count == 1, "\(page)")
        #expect((page["counts"] as? [String])?.contains { $0.contains("127.0.0.1:\(server.port)") && $0.contains("connect") } == true, "\(page)")
        #expect((page["facts"] as? String)?.contains("last reload: none since start") == true, "\(page)")
        // Its close button ends it.
        #expect(page["clicked"] as? Bool == true)
        #expect(await server.process.waitForStderr(containing: "end=closed_by_admin"))
        let closed = try await onThread { running.waitForClose() }
        #expect(closed)
        await echo.stop()
    }

    @Test func whileSessionsDrainReadinessSays503AndTheSessionsStayListed() async throws {
        let echo = try await TargetServer.echo()
        let server = try await ServerProcess.start(Self.adminConfig + "timeouts:\n  shutdown_grace: 30s\n")
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        let running = try await openSession(server, echo: echo)
        server.process.signal(SIGTERM)
        #expect(await server.process.waitForStderr(containing: "draining sessions"))
        // A balancer's health check now takes the instance out; the drain can be watched.
        let (ready, health, sessions) = try await onThread {
            (try httpRequest(port: admin, "/readyz"), try httpRequest(port: admin, "/healthz"), try httpRequest(port: admin, "/sessions"))
        }
        #expect(ready.status == 503, "\(ready)")
        #expect(health.status == 200)
        let list = try JSONSerialization.jsonObject(with: Data(sessions.body.utf8)) as? [[String: Any]]
        #expect(list?.count == 1, "\(sessions.body)")
        // New SOCKS connections are refused already.
        #expect((try? TestSocket(host: "127.0.0.1", port: server.port)) == nil)
        // Once the last session ends, the process exits and the admin listener with it.
        running.shutdownWrite()
        #expect(await server.process.waitForExit(timeout: 10) == 0)
        #expect((try? TestSocket(host: "127.0.0.1", port: admin)) == nil)
        await echo.stop()
    }

    @Test(.timing) func duringTheShutdownDelayReadinessSays503AndNewSessionsAreStillServed() async throws {
        let echo = try await TargetServer.echo()
        let server = try await ServerProcess.start(Self.adminConfig + "timeouts:\n  shutdown_delay: 4s\n")
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        let signalled = Date()
        server.process.signal(SIGTERM)
        #expect(await server.process.waitForStderr(containing: "not ready, still accepting"))
        let (ready, code) = try await onThread { () throws -> (Int, SOCKSReplyCode) in
            let ready = try httpRequest(port: admin, "/readyz").status
            let socket = try TestSocket(host: "127.0.0.1", port: server.port)
            let code = try socket.socksConnect(to: loopback4(echo.port), payload: [9]).code
            _ = try socket.receive(exactly: 1)
            return (ready, code)
        }
        #expect(ready == 503)
        #expect(code == .succeeded, "a connection the balancer sends before it notices is served")
        // Then the listeners close and the process exits (no session left to drain).
        #expect(await server.process.waitForExit(timeout: 20) == 0)
        #expect(Date().timeIntervalSince(signalled) >= 4, "the delay is what is tested")
        await echo.stop()
    }

    @Test func healthReadinessAndThePACFile() async throws {
        let server = try await ServerProcess.start(Self.adminConfig)
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        let (health, ready, pac, missing) = try await onThread {
            (try httpRequest(port: admin, "/healthz"), try httpRequest(port: admin, "/readyz"), try httpRequest(port: admin, "/proxy.pac"),
             try httpRequest(port: admin, "/nowhere"))
        }
        #expect(health.status == 200 && ready.status == 200)
        #expect(missing.status == 404)
        #expect(pac.status == 200)
        // The bound SOCKS port, not the 0 of the file; listed entries go direct.
        #expect(pac.body.contains("return \"SOCKS5 127.0.0.1:\(server.port)\";"), "\(pac.body)")
        #expect(!pac.body.contains("\"SOCKS ") && !pac.body.contains("; SOCKS"), "no SOCKS4 fallback, which resolves names in the browser")
        #expect(pac.body.contains("dnsDomainIs(host, \".corp.example\")"))
        #expect(pac.body.contains("isInNet(host, \"10.0.0.0\", \"255.0.0.0\")"))
    }

    @Test func aTokenIsRequiredWhenConfiguredAndARemoteAdminNeedsOne() async throws {
        let token = "s3cret-token-0123456789"
        let server = try await ServerProcess.start("listen: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.1:0\n  token: \(token)\n")
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(server)
        let (none, wrong, right, query, health) = try await onThread {
            (try httpRequest(port: admin, "/sessions"), try httpRequest(port: admin, "/sessions", headers: ["Authorization": "Bearer nope"]),
             try httpRequest(port: admin, "/sessions", headers: ["Authorization": "Bearer \(token)"]),
             try httpRequest(port: admin, "/sessions?token=\(token)"), try httpRequest(port: admin, "/healthz"))
        }
        #expect(none.status == 401 && wrong.status == 401)
        #expect(right.status == 200 && query.status == 401, "a token in the URL opens nothing")
        #expect(health.status == 200)
        // Every route but the public ones (health, PAC, the static page) wants it, whatever the
        // method, known or not.
        let routes = [
            ("POST", "/"), ("GET", "/metrics"), ("GET", "/sessions"), ("DELETE", "/sessions/1"), ("DELETE", "/proxy.pac"),
            ("GET", "/status"), ("GET", "/usage"), ("DELETE", "/usage/alice"), ("POST", "/sessions"), ("PUT", "/metrics"),
            ("GET", "/no-such-page"), ("GET", "/sessions?token=nope"), ("GET", "/%2e%2e/metrics"),
        ]
        let answers = try await onThread {
            try routes.map { route in
                (try httpRequest(port: admin, route.1, method: route.0).status,
                 try httpRequest(port: admin, route.1, method: route.0, headers: ["Authorization": "Bearer \(token)"]).status)
            }
        }
        for (route, (without, with)) in zip(routes, answers) {
            #expect(without == 401, "\(route.0) \(route.1) without the token: \(without)")
            #expect(with != 401, "\(route.0) \(route.1) with the token: \(with)")
        }
        let ready = try await onThread { try httpRequest(port: admin, "/readyz").status }
        #expect(ready == 200, "readiness is public, like health")
        // A non-loopback admin address without allow_remote and a token is refused.
        let remote = try await runProcess(sallyportExecutable(), ["check-config", try temporaryFile("admin:\n  listen: 0.0.0.0:9180\n")])
        #expect(remote.status == 1)
        #expect(remote.stderr.contains("admin.listen: 0.0.0.0:9180 is not a loopback address"), "\(remote.stderr)")
    }
}

/// The version the binary reports (Sources/Sallyport/Version.swift).
let sallyportVersionForTests: String = {
    let text = (try? String(contentsOfFile: packageRoot() + "/Sources/Sallyport/Version.swift", encoding: .utf8)) ?? ""
    return text.split(separator: "\"").dropFirst().first.map(String.init) ?? "?"
}()
