import SallyportTestSupport
import Foundation
import SOCKSProtocol
import Testing

/// CONNECT through upstream proxies, each a real program: a second Sallyport (with and without a
/// login), Dante and tinyproxy (HTTP CONNECT). curl talks to the first Sallyport.
@Suite(.serialized, .system, .timeLimit(.minutes(3)), .enabled(if: underPAMWrapper, "needs pam_wrapper: run through `make test`"))
struct UpstreamTests {
    static let body = "hello through two proxies\n"
    // No proxy variables of the machine; no pam_wrapper (clients need none, and its set-up races
    // between programs that start at once).
    let cleanEnvironment = ["http_proxy": "", "https_proxy": "", "all_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": "", "ALL_PROXY": "", "no_proxy": "", "LD_PRELOAD": ""]
    let ip = which("ip") ?? "/usr/sbin/ip"

    func curl(_ proxyPort: Int, _ url: String) async throws -> ProcessResult {
        let curl = try #require(which("curl"), "curl is not installed; `make test` installs it")
        return try await runProcess(curl, ["-sS", "--max-time", "5", "-x", "socks5h://127.0.0.1:\(proxyPort)", url], environment: cleanEnvironment)
    }

    /// The reply code a CONNECT to `destination` gets through the proxy at `port`.
    func reply(_ port: Int, _ destination: SOCKSEndpoint) async throws -> SOCKSReplyCode {
        try await onThread { try TestSocket(host: "127.0.0.1", port: port).socksConnect(to: destination).code }
    }

    /// The second Sallyport runs on this host, where only loopback names resolve to a target; a
    /// loopback name is judged as the loopback address by the first (names going unresolved are
    /// shown through Dante, tinyproxy and an HTTP upstream below).
    @Test(arguments: [false, true])
    func throughASecondSallyport(withLogin: Bool) async throws {
        let http = try await TargetServer.start { HTTPResponder(body: Self.body) }
        let second = try await ServerProcess.start(withLogin ? """
            listen: [127.0.0.1:0]
            methods: [username]
            auth: {pam: {service: sallyport-test}}
            rules: [{name: only-the-target, action: allow, to: [127.0.0.0/8], ports: [\(http.port)]}]
            """ : """
            listen: [127.0.0.1:0]
            rules: [{name: only-the-target, action: allow, to: [127.0.0.0/8], ports: [\(http.port)]}]
            """)
        defer { second.process.signal(SIGKILL) }
        let credentials = withLogin ? "alice:wonder%6Cand@" : ""
        let first = try await ServerProcess.start("""
            listen: [127.0.0.1:0]
            rules:
              - {name: via-second, action: allow, to: [127.0.0.0/8], via: "socks5://\(credentials)127.0.0.1:\(second.port)"}
            """)
        defer { first.process.signal(SIGKILL) }
        let result = try await curl(first.port, "http://localhost:\(http.port)/")
        #expect(result.status == 0, "\(result.stderr) \(first.process.stderr)")
        #expect(result.stdout == Self.body)
        #expect(await second.process.waitForStderr(containing: "msg=session"))
        let seen = logfmtFields(second.process.stderr.split(separator: "\n").first { $0.contains("msg=session") }.map(String.init) ?? "")
        #expect(seen["dst"] == "127.0.0.1:\(http.port)", "a loopback name goes on as the address the rule allowed: \(seen)")
        #expect(seen["user"] == (withLogin ? "alice" : "-"))
        #expect(await first.process.waitForStderr(containing: "msg=session"))
        let own = logfmtFields(first.process.stderr.split(separator: "\n").first { $0.contains("msg=session") }.map(String.init) ?? "")
        #expect(own["via"] == "socks5://127.0.0.1:\(second.port)" && own["rule"] == "via-second" && own["reply"] == "0", "\(own)")
        #expect(!first.process.stderr.contains("wonder"), "credentials never reach the log")

        // The upstream's refusals come back as its reply codes: its rules (0x02), a closed port (0x05).
        let refusing = try RefusingPort()
        #expect(try await reply(first.port, loopback4(http.port + (http.port == 65535 ? -1 : 1))) == .notAllowed)
        let secondOpen = try await ServerProcess.start("""
            listen: [127.0.0.1:0]
            rules: [{action: allow, to: [127.0.0.0/8]}]
            """)
        defer { secondOpen.process.signal(SIGKILL) }
        let through = try await ServerProcess.start("""
            listen: [127.0.0.1:0]
            rules: [{action: allow, to: [127.0.0.0/8], via: "socks5://127.0.0.1:\(secondOpen.port)"}]
            """)
        defer { through.process.signal(SIGKILL) }
        #expect(try await reply(through.port, loopback4(refusing.port)) == .connectionRefused)
        await http.stop()
    }

    /// The attack: a name carrying a request line of its own, towards a rule whose upstream is an
    /// HTTP proxy with the gateway's credentials. It is refused at the parser (0x01); the upstream
    /// sees the next, valid request's head and nothing before it.
    @Test func anInjectedNameNeverReachesAnHTTPUpstream() async throws {
        let upstream = try BackgroundProcess("/usr/bin/python3", ["-c", """
            import socket, sys
            server = socket.create_server(("127.0.0.1", 0))
            print("port %d" % server.getsockname()[1], file=sys.stderr, flush=True)
            while True:
                conn, _ = server.accept()
                head = b""
                while b"\\r\\n\\r\\n" not in head:
                    more = conn.recv(1024)
                    if not more: break
                    head += more
                print("head %r" % head, file=sys.stderr, flush=True)
                conn.sendall(b"HTTP/1.1 200 Connection established\\r\\n\\r\\n")
                conn.close()
            """], environment: withoutWrappers)
        defer { upstream.signal(SIGKILL) }
        #expect(await upstream.waitForStderr(containing: "port "))
        let port = try #require(Int(upstream.stderr.split(separator: "\n")[0].split(separator: " ").last ?? ""))
        let gateway = try await ServerProcess.start("""
            listen: [127.0.0.1:0]
            rules: [{action: allow, to: [.corp.example], via: "http://gw:secret@127.0.0.1:\(port)"}]
            """)
        defer { gateway.process.signal(SIGKILL) }
        for name in [
            "a.corp.example:80 HTTP/1.1\r\nX-Injected: 1\r\n\r\nCONNECT internal.corp.example", "a.corp.example HTTP/1.1",
            "a\r\n.corp.example", "x\u{0600}.corp.example",
        ] {
            #expect(try await reply(gateway.port, SOCKSEndpoint(host: .domain(name), port: 80)) == .generalFailure, "\(name.debugDescription)")
        }
        #expect(try await reply(gateway.port, SOCKSEndpoint(host: .domain("A.Corp.Example"), port: 80)) == .succeeded)
        #expect(await upstream.waitForStderr(containing: "head "))
        let heads = upstream.stderr.split(separator: "\n").filter { $0.hasPrefix("head ") }
        #expect(heads.count == 1 && heads[0].hasPrefix("head b'CONNECT a.corp.example:80 HTTP/1.1\\r\\nHost: a.corp.example:80\\r\\n"), "\(heads)")
        #expect(!upstream.stderr.contains("Injected") && !upstream.stderr.contains("internal"))
    }

    @Test func aLoopbackNameOrAddressInDisguiseIsJudgedByTheGuardBeforeAnUpstream() async throws {
        let gateway = try await ServerProcess.start("""
            listen: [127.0.0.1:0]
            rules: [{action: allow, to: ["*"], via: "http://127.0.0.1:9"}]
            """)
        defer { gateway.process.signal(SIGKILL) }
        // Refused by the guard (0x02), or not found here (0x04: `db.localhost` has no address on
        // this host); never tried at the upstream (nothing listens on its port: that would be 0x01).
        for name in ["localhost", "db.localhost", "127.1", "2130706433", "0x7f.1", "[::1]", "169.254.169.254"] {
            let code = try await reply(gateway.port, SOCKSEndpoint(host: .domain(name), port: 80))
            #expect(code == .notAllowed || (name == "db.localhost" && code == .hostUnreachable), "\(name): \(code)")
        }
    }

    @Test func anUpstreamThatIsDownIsNamedInTheLog() async throws {
        let refusing = try RefusingPort()
        let first = try await ServerProcess.start("""
            listen: [127.0.0.1:0]
            rules: [{name: via-nowhere, action: allow, to: [127.0.0.0/8], via: "http://bob:s3cret@127.0.0.1:\(refusing.port)"}]
            """)
        defer { first.process.signal(SIGKILL) }
        #expect(try await reply(first.port, loopback4(80)) == .generalFailure)
        #expect(await first.process.waitForStderr(containing: "msg=\"connect failed\""))
        let line = first.process.stderr.split(separator: "\n").first { $0.contains("connect failed") }.map(String.init) ?? ""
        #expect(line.contains("level=warning") && line.contains("via=http://127.0.0.1:\(refusing.port)"), "\(line)")
        #expect(!first.process.stderr.contains("s3cret"))
    }

    @Test func theTargetsFirstBytesThatComeWithTheUpstreamsAnswerReachTheClient() async throws {
        // An HTTP upstream that answers and passes on a server's banner in one segment.
        let upstream = try BackgroundProcess("/usr/bin/python3", ["-c", """
            import socket, sys
            server = socket.create_server(("127.0.0.1", 0))
            print("port %d" % server.getsockname()[1], file=sys.stderr, flush=True)
            conn, _ = server.accept()
            head = b""
            while b"\\r\\n\\r\\n" not in head:
                head += conn.recv(1024)
            conn.sendall(b"HTTP/1.1 200 Connection established\\r\\n\\r\\nSSH-2.0-banner\\r\\n")
            print(head.decode().split("\\r\\n")[0], file=sys.stderr, flush=True)
            conn.recv(1024)
            """], environment: withoutWrappers)
        defer { upstream.signal(SIGKILL) }
        #expect(await upstream.waitForStderr(containing: "port "))
        let port = try #require(Int(upstream.stderr.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""))
        let first = try await ServerProcess.start("""
            listen: [127.0.0.1:0]
            rules: [{action: allow, to: [ssh.example], via: "http://127.0.0.1:\(port)"}]
            """)
        defer { first.process.signal(SIGKILL) }
        let banner = try await onThread { () throws -> [UInt8] in
            let socket = try TestSocket(host: "127.0.0.1", port: first.port)
            guard try socket.socksConnect(to: SOCKSEndpoint(host: .domain("ssh.example"), port: 22)).code == .succeeded else { return [] }
            return try socket.receive(exactly: 16)
        }
        #expect(banner == Array("SSH-2.0-banner\r\n".utf8))
        #expect(await upstream.waitForStderr(containing: "CONNECT ssh.example:22 HTTP/1.1"))
    }

    /// Dante and tinyproxy listen on fixed ports in a namespace of the test's own, with the
    /// target inside it too: the name "target.test" is resolved there, by the upstream.
    @Test(arguments: ["dante", "tinyproxy"])
    func throughDanteAndTinyproxy(upstream: String) async throws {
        try await withCable { cable in
            let work = NSTemporaryDirectory() + "sallyport-upstream-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: work) }
            let target = try BackgroundProcess(ip, ["netns", "exec", cable.namespace, "/usr/bin/python3", "-c", """
                import http.server, sys
                class Handler(http.server.BaseHTTPRequestHandler):
                    def do_GET(self):
                        body = sys.argv[1].encode()
                        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
                    def log_message(self, *args): pass
                server = http.server.HTTPServer(("127.0.0.1", 8080), Handler)
                print("serving", file=sys.stderr, flush=True)
                server.serve_forever()
                """, Self.body], environment: withoutWrappers)
            defer { target.signal(SIGKILL) }
            #expect(await target.waitForStderr(containing: "serving"))
            let proxy: BackgroundProcess
            let url: String
            if upstream == "dante" {
                let config = work + "/danted.conf"
                try """
                    logoutput: stderr
                    internal: \(cable.farIP) port = 1080
                    external: 127.0.0.1
                    socksmethod: none
                    clientmethod: none
                    user.privileged: root
                    user.unprivileged: nobody
                    client pass { from: \(cable.hostIP)/32 to: 0.0.0.0/0 }
                    socks pass { from: \(cable.hostIP)/32 to: 127.0.0.1/32 port = 8080 command: connect }
                    socks block { from: 0.0.0.0/0 to: 0.0.0.0/0 }

                    """.write(toFile: config, atomically: true, encoding: .utf8)
                proxy = try BackgroundProcess(ip, ["netns", "exec", cable.namespace, "/usr/sbin/danted", "-f", config], environment: withoutWrappers)
                url = "socks5://\(cable.farIP):1080"
            } else {
                let config = work + "/tinyproxy.conf"
                try """
                    Port 8888
                    Listen \(cable.farIP)
                    Timeout 30
                    Allow \(cable.hostIP)
                    ConnectPort 8080
                    LogLevel Info
                    MaxClients 20

                    """.write(toFile: config, atomically: true, encoding: .utf8)
                proxy = try BackgroundProcess(
                    ip, ["netns", "exec", cable.namespace, "/usr/bin/tinyproxy", "-d", "-c", config], environment: withoutWrappers)
                url = "http://\(cable.farIP):8888"
            }
            // SIGTERM: Dante's children go with it (SIGKILL would leave them).
            defer { proxy.signal(SIGTERM) }
            let upstreamPort = upstream == "dante" ? 1080 : 8888
            // Until the upstream listens (neither says so on a pipe): bounded tries to connect.
            var listening = false
            for _ in 0..<100 where !listening {
                listening = (try? TestSocket(host: cable.farIP, port: upstreamPort, timeout: 1)) != nil
                if !listening { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(listening, "\(upstream) did not listen: \(proxy.stderr)")
            let first = try await ServerProcess.start("""
                listen: [127.0.0.1:0]
                rules:
                  - {name: via-\(upstream), action: allow, to: [target.test], via: "\(url)"}
                """)
            defer { first.process.signal(SIGKILL) }
            let page = try await onThread { () throws -> String in
                let socket = try TestSocket(host: "127.0.0.1", port: first.port)
                let code = try socket.socksConnect(
                    to: SOCKSEndpoint(host: .domain("target.test"), port: 8080), payload: Array("GET / HTTP/1.0\r\nHost: target.test\r\n\r\n".utf8)).code
                guard code == .succeeded else { return "reply \(code)" }
                return String(decoding: try socket.receiveUntilEOF(), as: UTF8.self)
            }
            #expect(page.hasPrefix("HTTP/1.0 200") && page.hasSuffix(Self.body), "\(page) \(first.process.stderr) \(proxy.stderr)")
            #expect(await first.process.waitForStderr(containing: "via=\(url)"))
            // A port the upstream refuses (Dante's rules, tinyproxy's ConnectPort): not allowed.
            let refused = try await reply(first.port, SOCKSEndpoint(host: .domain("localhost"), port: 9))
            #expect(refused == .notAllowed, "\(first.process.stderr)")
        }
    }
}
