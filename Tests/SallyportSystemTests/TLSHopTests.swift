import SallyportTestSupport
import Foundation
import Testing

/// The laptop-to-gateway set-up, in a network namespace of the test's own: curl → Sallyport on
/// loopback (method none) → `socks5+tls` over a veth link → Sallyport in the namespace (TLS, a
/// password or a client certificate) → a web server there. A capture on the link shows neither the
/// password nor the target's name.
@Suite(.system, .timeLimit(.minutes(3))) struct TLSHopTests {
    static let password = "hop-secret-pw-7Q"

    enum Login: CaseIterable { case password, certificate }

    @Test(arguments: Login.allCases)
    func curlThroughTheLaptopHopCarriesNoSecretInClear(login: Login) async throws {
        let pki = try await TLSTests.pki()
        let mkpasswd = try #require(which("mkpasswd"), "mkpasswd (Debian whois) is not installed; `make test` installs it")
        let tcpdump = try #require(which("tcpdump"), "tcpdump is not installed; `make test` installs it")
        let python = try #require(which("python3"))
        let curl = try #require(which("curl"))
        let hash = try await runProcess(mkpasswd, ["-m", "yescrypt", "--stdin"], input: Data((Self.password + "\n").utf8), environment: withoutWrappers)
        let users = try temporaryFile("alice:\(hash.stdout.trimmingCharacters(in: .whitespacesAndNewlines)):staff\n", suffix: ".users")
        let site = try temporaryDirectory("site")
        try "through the hop\n".write(toFile: site + "/page.txt", atomically: true, encoding: .utf8)
        try await withCable { cable in
            let ip = which("ip") ?? "/usr/sbin/ip"
            // The target: a web server on the namespace's loopback, known there as target.test.
            let web = try BackgroundProcess(
                ip, ["netns", "exec", cable.namespace, python, "-c",
                     "import http.server, functools, sys; s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])); print('port=%d' % s.server_port, file=sys.stderr, flush=True); s.serve_forever()",
                     site], environment: withoutWrappers)
            defer { web.signal(SIGTERM) }
            #expect(await web.waitForStderr(containing: "port="))
            let webPort = try #require(web.stderr.split(separator: "\n").first { $0.hasPrefix("port=") }.flatMap { Int($0.dropFirst(5)) })
            let methods = login == .password ? "[username]" : "[certificate]"
            let clientCA = login == .password ? "" : ", client_ca: \(pki)/ca.pem"
            let gateway = try await ServerProcess.start(
                """
                listen:
                  - address: \(cable.farIP):0
                    methods: \(methods)
                    tls: {certificate: \(pki)/server.pem, key: \(pki)/server.key\(clientCA)}
                auth: {file: \(users)}
                rules:
                  - {action: allow, who: [user:alice], to: [127.0.0.0/8]}
                default_action: deny
                """, namespace: cable.namespace)
            defer { gateway.process.signal(SIGTERM) }
            let credentials = login == .password ? "alice:\(Self.password)@" : ""
            let clientCertificate = login == .password ? "" : ", tls_certificate: \(pki)/alice.pem, tls_key: \(pki)/alice.key"
            let laptop = try await ServerProcess.start(
                """
                listen: [127.0.0.1:0]
                methods: [none]
                rules:
                  - {action: allow, to: ["*"], via: "socks5+tls://\(credentials)\(cable.farIP):\(gateway.port)", tls_ca: \(pki)/ca.pem, tls_server_name: gateway.test\(clientCertificate)}
                """)
            defer { laptop.process.signal(SIGTERM) }
            // Capture the link, this test's own interface and the gateway's port only.
            let capture = TestRun.current.temporaryPath("hop") + ".pcap"
            let dump = try BackgroundProcess(tcpdump, ["-i", cable.hostSide, "--immediate-mode", "-U", "-n", "-w", capture, "tcp", "port", "\(gateway.port)"], environment: withoutWrappers)
            defer { dump.signal(SIGTERM) }
            #expect(await dump.waitForStderr(containing: "listening on"), "\(dump.stderr)")
            let fetched = try await runProcess(
                curl, ["-sS", "--max-time", "20", "--socks5-hostname", "127.0.0.1:\(laptop.port)", "http://target.test:\(webPort)/page.txt"],
                environment: withoutWrappers)
            #expect(fetched.stdout == "through the hop\n", "\(fetched.stderr) \(laptop.process.stderr) \(gateway.process.stderr)")
            #expect(await gateway.process.waitForStderr(containing: "msg=session"))
            let line = try #require(gateway.process.stderr.split(separator: "\n").first { $0.contains("msg=session") }.map(String.init))
            #expect(logfmtFields(line)["user"] == "alice" && logfmtFields(line)["dst"] == "target.test:\(webPort)", "\(line)")
            #expect(await laptop.process.waitForStderr(containing: "via=socks5+tls://\(cable.farIP):\(gateway.port)"), "\(laptop.process.stderr)")
            dump.signal(SIGINT)
            #expect(await dump.waitForExit(timeout: 10) != nil)
            let bytes = try #require(FileManager.default.contents(atPath: capture))
            // The capture holds the hop (the TLS server name is in clear in the ClientHello) ...
            #expect(bytes.count > 1_000, "\(bytes.count) bytes captured: \(dump.stderr)")
            #expect(bytes.range(of: Data("gateway.test".utf8)) != nil, "\(bytes.count) bytes captured")
            // ... and neither the password nor the target's name.
            #expect(bytes.range(of: Data(Self.password.utf8)) == nil)
            #expect(bytes.range(of: Data("target.test".utf8)) == nil)
            #expect(bytes.range(of: Data("through the hop".utf8)) == nil)
        }
    }
}
