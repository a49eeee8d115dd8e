import SallyportTestSupport
import Foundation
import Testing

/// TLS listeners over real sockets with the real binary: openssl s_client for the handshake and
/// the chain, Python's ssl around a SOCKS5 client, client certificates (valid, revoked, expired,
/// unknown CA, missing, and names no log or rule can take), reloads of renewed and broken files.
@Suite(.system, .timeLimit(.minutes(3))) struct TLSTests {
    /// The run's PKI (Tests/Integration/make_pki.py), made once and shared by every TLS test: read
    /// only. A test that changes a file there works on a copy of its own (`privatePKI()`).
    static func pki() async throws -> String { try await sharedPKI.value }

    private static let sharedPKI = Task(executorPreference: BlockingTestExecutor.shared) { () async throws -> String in
        let directory = try temporaryDirectory("pki")
        let made = try await runProcess(which("python3") ?? "/usr/bin/python3", [packageRoot() + "/Tests/Integration/make_pki.py", directory], environment: withoutWrappers)
        guard made.status == 0 else { throw TestSocketError("make_pki.py: \(made.stderr)", errno: 0) }
        for key in ["server", "server2", "alice", "bob", "carol", "mallory", "crlf", "nul", "jose", "twocn"] {
            chmod(directory + "/\(key).key", 0o600)
        }
        return directory
    }

    /// A copy of the run's PKI that this test may change.
    static func privatePKI() async throws -> String {
        let shared = try await pki()
        let copy = try temporaryDirectory("pki-copy")
        for file in try FileManager.default.contentsOfDirectory(atPath: shared) {
            try FileManager.default.copyItem(atPath: "\(shared)/\(file)", toPath: "\(copy)/\(file)")
        }
        return copy
    }

    /// A listener asking for client certificates (method certificate) and one without.
    static func yaml(_ pki: String, identity: String = "cn") -> String {
        """
        listen:
          - address: 127.0.0.1:0
            methods: [certificate]
            tls: {certificate: \(pki)/server.pem, key: \(pki)/server.key, client_ca: \(pki)/ca.pem, crl: \(pki)/crl.pem, identity: \(identity), groups: {alice: [staff]}}
        limits: {connections_per_client: 0}
        rules:
          - {name: staff-only, action: allow, who: [group:staff], to: [127.0.0.0/8]}
        default_action: deny
        """
    }

    /// The PKI, an echo target and the server on `yaml(pki, identity:)` as `edit` changes it.
    static func standard(
        identity: String = "cn", _ edit: (_ yaml: String, _ pki: String) -> String = { yaml, _ in yaml }
    ) async throws -> (pki: String, echo: TargetServer, server: ServerProcess) {
        let pki = try await pki()
        let echo = try await TargetServer.echo()
        return (pki, echo, try await ServerProcess.start(edit(yaml(pki, identity: identity), pki)))
    }

    /// Alice's certificate gets her CONNECT through the server `standard(identity:_:)` starts, and
    /// the server logs `logging`.
    static func aliceGetsThrough(
        identity: String = "cn", logging: String, _ edit: (_ yaml: String, _ pki: String) -> String
    ) async throws {
        let (pki, echo, server) = try await standard(identity: identity, edit)
        defer { server.process.signal(SIGTERM) }
        let answer = try await socks(server.port, pki, echo: echo.port, certificate: "alice")
        #expect(answer.hasPrefix("tls=TLSv1.3 reply=0 echo=ok"), "\(answer)")
        #expect(await server.process.waitForStderr(containing: logging))
        await echo.stop()
    }

    /// tls_socks.py's one line for a SOCKS5 CONNECT inside TLS to the echo at `echo`.
    static func socks(_ port: Int, _ pki: String, echo: Int, certificate: String? = nil, extra: [String] = []) async throws -> String {
        let python = try #require(which("python3"))
        var arguments = [packageRoot() + "/Tests/Integration/tls_socks.py", "127.0.0.1", "\(port)", pki + "/ca.pem", "gateway.test", "127.0.0.1", "\(echo)", "hello"]
        if let certificate { arguments += ["--cert", "\(pki)/\(certificate).pem", "--key", "\(pki)/\(certificate).key"] }
        let result = try await runProcess(python, arguments + extra, environment: withoutWrappers, timeout: 20)
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) + result.stderr
    }

    /// `openssl s_client`'s output for a handshake with the listener, with `options`.
    static func sClient(_ port: Int, _ pki: String, _ options: [String]) async throws -> String {
        let openssl = try #require(which("openssl"))
        let result = try await runProcess(
            openssl, ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", pki + "/ca.pem", "-servername", "gateway.test", "-showcerts"] + options,
            input: Data(), environment: withoutWrappers, timeout: 20)
        return result.stdout + result.stderr
    }

    @Test func opensslSeesTLS13And12WithTheWholeChainAndNothingOlder() async throws {
        let pki = try await Self.pki()
        // No client certificates here: openssl shows none.
        let server = try await ServerProcess.start(Self.yaml(pki).replacingOccurrences(of: "methods: [certificate]", with: "methods: [none]")
            .replacingOccurrences(of: ", client_ca: \(pki)/ca.pem, crl: \(pki)/crl.pem, identity: cn, groups: {alice: [staff]}", with: ""))
        defer { server.process.signal(SIGTERM) }
        let tls13 = try await Self.sClient(server.port, pki, ["-tls1_3"])
        #expect(tls13.contains("TLSv1.3") && tls13.contains("Verify return code: 0 (ok)"), "\(tls13)")
        // The server's certificate and the intermediate after it.
        #expect(tls13.components(separatedBy: "-----BEGIN CERTIFICATE-----").count == 3, "\(tls13)")
        #expect(tls13.contains("CN = Sallyport Test Intermediate"), "\(tls13)")
        let tls12 = try await Self.sClient(server.port, pki, ["-tls1_2"])
        #expect(tls12.contains("Protocol  : TLSv1.2") && tls12.contains("Verify return code: 0 (ok)"), "\(tls12)")
        let tls11 = try await Self.sClient(server.port, pki, ["-tls1_1"])
        // No cipher agreed: the handshake ended with a protocol-version alert.
        #expect(tls11.contains("Cipher is (NONE)"), "\(tls11)")
        #expect(await server.process.waitForStderr(containing: "end=tls_failed"))
    }

    @Test func aClientCertificateLogsInAsItsUserAndTheRuleForItsGroupDecides() async throws {
        let (pki, echo, server) = try await Self.standard()
        defer { server.process.signal(SIGTERM) }
        let alice = try await Self.socks(server.port, pki, echo: echo.port, certificate: "alice")
        #expect(alice.hasPrefix("tls=TLSv1.3 reply=0 echo=ok"), "\(alice)")
        // José has a valid certificate but no group: the only rule is staff's.
        let jose = try await Self.socks(server.port, pki, echo: echo.port, certificate: "jose")
        #expect(jose.hasPrefix("tls=TLSv1.3 reply=2"), "\(jose)")
        #expect(await server.process.waitForStderr(containing: "msg=session", count: 2))
        let lines = server.process.stderr.split(separator: "\n").filter { $0.contains("msg=session") }.map(String.init)
        let aliceLine = try #require(lines.first { logfmtFields($0)["user"] == "alice" }, "\(lines)")
        #expect(logfmtFields(aliceLine)["rule"] == "staff-only" && logfmtFields(aliceLine)["end"] == "client_closed", "\(aliceLine)")
        // Non-ASCII reaches the log escaped, never raw.
        #expect(lines.contains { $0.contains("user=\"Jos\\u00e9\"") && $0.contains("end=denied") }, "\(lines)")
        await echo.stop()
    }

    @Test func aUserRuleDecidesForTheCertificatesUser() async throws {
        // No groups anywhere: only the rule naming the user lets alice through.
        try await Self.aliceGetsThrough(logging: "rule=alice-only") { yaml, _ in
            yaml.replacingOccurrences(of: ", groups: {alice: [staff]}", with: "")
                .replacingOccurrences(of: "{name: staff-only, action: allow, who: [group:staff]", with: "{name: alice-only, action: allow, who: [user:alice]")
        }
    }

    @Test func udpAssociateWorksOnATLSControlConnection() async throws {
        let pki = try await Self.pki()
        let echo = try await UDPEchoServer.start()
        let server = try await ServerProcess.start(Self.yaml(pki))
        defer { server.process.signal(SIGTERM) }
        let answer = try await Self.socks(server.port, pki, echo: echo.port, certificate: "alice", extra: ["--udp"])
        #expect(answer.hasPrefix("tls=TLSv1.3 reply=0 udp=ok"), "\(answer)")
        #expect(await server.process.waitForStderr(containing: "cmd=udp"))
        #expect(server.process.stderr.contains("user=alice"))
    }

    @Test func behindABalancerThePROXYHeaderComesFirstInClearThenTLS() async throws {
        let (pki, echo, server) = try await Self.standard { yaml, _ in
            yaml.replacingOccurrences(of: "    methods: [certificate]\n", with: "    methods: [certificate]\n    proxy_protocol: v1\n    trusted_proxies: [127.0.0.0/8]\n")
        }
        defer { server.process.signal(SIGTERM) }
        let header = ["--proxy-header", "PROXY TCP4 192.0.2.7 198.51.100.1 40123 1443"]
        let answer = try await Self.socks(server.port, pki, echo: echo.port, certificate: "alice", extra: header)
        #expect(answer.hasPrefix("tls=TLSv1.3 reply=0 echo=ok"), "\(answer)")
        #expect(await server.process.waitForStderr(containing: "msg=session"))
        let line = try #require(server.process.stderr.split(separator: "\n").first { $0.contains("msg=session") }.map(String.init))
        #expect(logfmtFields(line)["client"] == "192.0.2.7:40123" && logfmtFields(line)["user"] == "alice", "\(line)")
        // TLS without the header first is no header: closed before any TLS or SOCKS answer.
        let bare = try await Self.socks(server.port, pki, echo: echo.port, certificate: "alice")
        #expect(bare.hasPrefix("refused:"), "\(bare)")
        #expect(await server.process.waitForStderr(containing: "end=proxy_refused"))
        await echo.stop()
    }

    @Test func theCertificatesEndIsAMetric() async throws {
        let pki = try await Self.pki()
        let server = try await ServerProcess.start(Self.yaml(pki) + "\nadmin: {listen: 127.0.0.1:0}\n")
        defer { server.process.signal(SIGTERM) }
        let admin = try await adminPort(of: server)
        let (status, body) = try await onThread { try httpRequest(port: admin, "/metrics") }
        #expect(status == 200)
        let openssl = try #require(which("openssl"))
        let end = try await runProcess(openssl, ["x509", "-in", pki + "/server.pem", "-noout", "-enddate"], environment: withoutWrappers)
        // notAfter=Dec  3 19:04:25 2027 GMT, as Unix seconds through date(1).
        let date = try await runProcess("/bin/date", ["-u", "-d", end.stdout.replacingOccurrences(of: "notAfter=", with: "").trimmingCharacters(in: .whitespacesAndNewlines), "+%s"])
        let expected = date.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let line = body.split(separator: "\n").first { $0.hasPrefix("sallyport_tls_certificate_expiry_seconds{") }.map(String.init) ?? ""
        #expect(line.contains("listener=\"127.0.0.1:0\"") && Double(line.split(separator: " ").last ?? "") == Double(expected), "\(line) vs \(expected)")
    }

    @Test func aCRLAddedByAReloadRefusesTheCertificatesItRevokes() async throws {
        let (pki, echo, server) = try await Self.standard { yaml, pki in
            yaml.replacingOccurrences(of: ", crl: \(pki)/crl.pem", with: "").replacingOccurrences(of: "{alice: [staff]}", with: "{bob: [staff]}")
        }
        defer { server.process.signal(SIGTERM) }
        let before = try await Self.socks(server.port, pki, echo: echo.port, certificate: "bob")
        #expect(before.hasPrefix("tls=TLSv1.3 reply=0 echo=ok"), "\(before)")
        try (Self.yaml(pki).replacingOccurrences(of: "{alice: [staff]}", with: "{bob: [staff]}")).write(toFile: server.configPath, atomically: true, encoding: .utf8)
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "configuration reloaded"))
        let after = try await Self.socks(server.port, pki, echo: echo.port, certificate: "bob")
        #expect(after.hasPrefix("refused:"), "\(after)")
        #expect(await server.process.waitForStderr(containing: "end=certificate_refused"))
        await echo.stop()
    }

    @Test func aCertificateUsersGroupsComeFromTheUserFileToo() async throws {
        let mkpasswd = try #require(which("mkpasswd"), "mkpasswd (Debian whois) is not installed; `make test` installs it")
        let hash = try await runProcess(mkpasswd, ["-m", "yescrypt", "--stdin"], input: Data("unused-pw\n".utf8), environment: withoutWrappers)
        let users = try temporaryFile("alice:\(hash.stdout.trimmingCharacters(in: .whitespacesAndNewlines)):staff\n", suffix: ".users")
        try await Self.aliceGetsThrough(logging: "rule=staff-only") { yaml, _ in
            yaml.replacingOccurrences(of: ", groups: {alice: [staff]}", with: "") + "\nauth: {file: \(users)}\n"
        }
    }

    @Test func aViaWhoseCertificateDoesNotCarryTheServerNameFailsWithoutSendingTheRequest() async throws {
        let pki = try await Self.pki()
        let http = try await TargetServer.start { HTTPResponder(body: "hop\n") }
        // On 127.0.0.3, which the certificate does not name (NIOSSL also takes an IP address in the
        // certificate equal to the one connected to), so that only the name decides.
        let gateway = try await ServerProcess.start(
            "listen:\n  - address: 127.0.0.3:0\n    tls: {certificate: \(pki)/server.pem, key: \(pki)/server.key}\nrules:\n  - {action: allow, to: [127.0.0.0/8]}\n")
        defer { gateway.process.signal(SIGTERM) }
        let curl = try #require(which("curl"))
        for (name, works) in [("gateway.test", true), ("wrong.test", false)] {
            let laptop = try await ServerProcess.start("""
                listen: [127.0.0.1:0]
                rules:
                  - {action: allow, to: [127.0.0.0/8], via: "socks5+tls://127.0.0.3:\(gateway.port)", tls_ca: \(pki)/ca.pem, tls_server_name: \(name)}
                """)
            defer { laptop.process.signal(SIGTERM) }
            let fetched = try await runProcess(
                curl, ["-sS", "--max-time", "20", "--socks5", "127.0.0.1:\(laptop.port)", "http://127.0.0.1:\(http.port)/"], environment: withoutWrappers)
            #expect((fetched.stdout == "hop\n") == works, "\(name): \(fetched.stdout) \(fetched.stderr)")
            if !works {
                // The laptop closed the connection after TLS and before any SOCKS byte: no request reached the gateway.
                #expect(await gateway.process.waitForStderr(containing: "msg=session", count: 2), "\(gateway.process.stderr)")
                let last = gateway.process.stderr.split(separator: "\n").last { $0.contains("msg=session") }.map(String.init) ?? ""
                #expect(logfmtFields(last)["cmd"] == "-" && logfmtFields(last)["up"] == "0", "\(last)")
                #expect(await laptop.process.waitForStderr(containing: "via=socks5+tls://127.0.0.3:\(gateway.port)"))
            }
        }
        await http.stop()
    }

    // Heavy and about a timeout: it runs alone, after the other system tests (a UDP test beside it once
    // waited over 2 s for a datagram on this 2-core machine).
    @Test(.timing) func aThousandHandshakesThatNeverFinishEndAtTheNegotiationTimeoutWhileARealClientGetsThrough() async throws {
        let (pki, echo, server) = try await Self.standard { yaml, _ in yaml + "\ntimeouts: {negotiation: 1s}\n" }
        defer { server.process.signal(SIGTERM) }
        // Half of a real ClientHello each, then nothing.
        let hello = try #require(FileManager.default.contents(atPath: packageRoot() + "/Tests/Fuzz/Corpus/tls-handshake/client-hello-tls13"))
        let half = Array(hello.prefix(hello.count / 2))
        let port = server.port
        let sockets = try await onThread { () throws -> [TestSocket] in
            try (0..<1000).map { _ in
                let socket = try TestSocket(host: "127.0.0.1", port: port, timeout: 30)
                try socket.send(half)
                return socket
            }
        }
        let answer = try await Self.socks(server.port, pki, echo: echo.port, certificate: "alice")
        #expect(answer.hasPrefix("tls=TLSv1.3 reply=0 echo=ok"), "\(answer)")
        #expect(await server.process.waitForStderr(containing: "end=negotiation_timeout", count: 1000, timeout: 60))
        let closed = try await onThread { sockets.allSatisfy { $0.waitForClose() } }
        #expect(closed)
        await echo.stop()
    }

    @Test func revokedExpiredUnknownAndMissingCertificatesAreRefusedBeforeAnySOCKSByte() async throws {
        let (pki, echo, server) = try await Self.standard()
        defer { server.process.signal(SIGTERM) }
        for (certificate, end) in [("bob", "certificate_refused"), ("carol", "tls_failed"), ("mallory", "tls_failed"), (nil, "tls_failed")] {
            let answer = try await Self.socks(server.port, pki, echo: echo.port, certificate: certificate)
            // No method selection came back: the connection ended (or TLS failed) first.
            #expect(answer.hasPrefix("refused:"), "\(certificate ?? "none"): \(answer)")
            #expect(await server.process.waitForStderr(containing: "end=\(end)"), "\(certificate ?? "none")")
        }
        #expect(await server.process.waitForStderr(containing: "msg=session", count: 4))
        #expect(server.process.stderr.contains("reason=\"the certificate is revoked (tls.crl)\""))
        #expect(!server.process.stderr.contains("cmd=connect"))
        await echo.stop()
    }

    @Test func namesWithControlCharactersOrTwoCommonNamesNameNobody() async throws {
        let (pki, echo, server) = try await Self.standard()
        defer { server.process.signal(SIGTERM) }
        for certificate in ["crlf", "nul", "twocn"] {
            let answer = try await Self.socks(server.port, pki, echo: echo.port, certificate: certificate)
            #expect(answer.hasPrefix("refused:"), "\(certificate): \(answer)")
        }
        #expect(await server.process.waitForStderr(containing: "end=certificate_refused", count: 3))
        // The forged field never reaches a log line as a field.
        #expect(!server.process.stderr.split(separator: "\n").contains { $0.hasPrefix("end=forged") })
        #expect(server.process.stderr.contains("the certificate has more than one cn"))
        await echo.stop()
    }

    @Test(arguments: [("email", "alice@example.test"), ("uri", "urn:user:alice")])
    func theUserCanComeFromASubjectAlternativeName(identity: String, user: String) async throws {
        try await Self.aliceGetsThrough(identity: identity, logging: "user=\(user)") { yaml, _ in
            yaml.replacingOccurrences(of: "{alice: [staff]}", with: "{\"\(user)\": [staff]}")
        }
    }

    @Test func aRenewedCertificateServesNewConnectionsWhileARunningSessionGoesOnAndABrokenKeyKeepsTheOld() async throws {
        let pki = try await Self.pki()
        let echo = try await TargetServer.echo()
        let live = try temporaryDirectory("live")
        for file in ["server.pem", "server.key"] { try FileManager.default.copyItem(atPath: "\(pki)/\(file)", toPath: "\(live)/\(file)") }
        let yaml = Self.yaml(pki).replacingOccurrences(of: "\(pki)/server.", with: "\(live)/server.")
        let server = try await ServerProcess.start(yaml)
        defer { server.process.signal(SIGTERM) }
        func servedSerial() async throws -> String {
            let openssl = try #require(which("openssl"))
            let shown = try await runProcess(
                "/bin/sh", ["-c", "\(openssl) s_client -connect 127.0.0.1:\(server.port) -servername gateway.test -cert \(pki)/alice.pem -key \(pki)/alice.key </dev/null 2>/dev/null | \(openssl) x509 -noout -serial"],
                environment: withoutWrappers, timeout: 20)
            return Self.serial(shown.stdout.replacingOccurrences(of: "serial=", with: ""))
        }
        let first = Self.serial(try String(contentsOfFile: "\(pki)/server.serial", encoding: .utf8))
        let renewed = Self.serial(try String(contentsOfFile: "\(pki)/server2.serial", encoding: .utf8))
        #expect(try await servedSerial() == first)
        // A session that keeps going across the reload (the Python client holds it open).
        let running = try await TLSSocksSession(port: server.port, pki: pki, echo: echo.port)
        defer { running.close() }
        #expect(await running.roundTrip("before", count: 1))
        for file in ["pem", "key"] {
            try FileManager.default.removeItem(atPath: "\(live)/server.\(file)")
            try FileManager.default.copyItem(atPath: "\(pki)/server2.\(file)", toPath: "\(live)/server.\(file)")
        }
        chmod("\(live)/server.key", 0o600)
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "configuration reloaded"))
        #expect(try await servedSerial() == renewed)
        #expect(await running.roundTrip("after", count: 1))
        // A key that is not the certificate's: the reload fails and says why, the renewed pair stays.
        try FileManager.default.removeItem(atPath: "\(live)/server.key")
        try FileManager.default.copyItem(atPath: "\(pki)/server.key", toPath: "\(live)/server.key")
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "do not make a pair"))
        #expect(try await servedSerial() == renewed)
        #expect(await running.roundTrip("still", count: 1))
        await echo.stop()
    }

    /// A serial in hex as openssl and Python write it: upper case, leading zeros dropped.
    static func serial(_ text: String) -> String {
        String(text.trimmingCharacters(in: .whitespacesAndNewlines).uppercased().drop { $0 == "0" })
    }

    @Test func checkConfigValidatesThePairThePermissionsAndTheExpiry() async throws {
        // It makes the key readable by all: on a copy of its own.
        let pki = try await Self.privatePKI()
        let good = try temporaryFile(Self.yaml(pki))
        let passed = try await runProcess(sallyportExecutable(), ["check-config", good])
        #expect(passed.status == 0, "\(passed.stderr)")
        let mismatched = try temporaryFile(Self.yaml(pki).replacingOccurrences(of: "\(pki)/server.key", with: "\(pki)/server2.key"))
        let failed = try await runProcess(sallyportExecutable(), ["check-config", mismatched])
        #expect(failed.status == 1 && failed.stderr.contains("do not make a pair"), "\(failed.stderr)")
        chmod("\(pki)/server.key", 0o644)
        let readable = try await runProcess(sallyportExecutable(), ["check-config", good])
        #expect(readable.status == 0 && readable.stderr.contains("can be read by every user of this host"), "\(readable.stderr)")
        // carol's certificate is expired: as a server certificate, a warning says so.
        let expired = try temporaryFile(Self.yaml(pki).replacingOccurrences(of: "\(pki)/server.", with: "\(pki)/carol."))
        let warned = try await runProcess(sallyportExecutable(), ["check-config", expired])
        #expect(warned.stderr.contains("has expired"), "\(warned.stderr)")
        let missing = try temporaryFile(Self.yaml(pki).replacingOccurrences(of: "\(pki)/crl.pem", with: "\(pki)/nothing.pem"))
        let absent = try await runProcess(sallyportExecutable(), ["check-config", missing])
        #expect(absent.status == 1 && absent.stderr.contains("cannot read \(pki)/nothing.pem"), "\(absent.stderr)")
    }
}

/// One SOCKS5 session inside TLS held open by a Python process (alice's certificate): each line
/// the test writes into its FIFO goes through the proxy to the echo and back, and the process says
/// `echo:LINE` on standard error.
final class TLSSocksSession: Sendable {
    let process: BackgroundProcess
    let fifo: String
    private let writer: Int32

    init(port: Int, pki: String, echo: Int) async throws {
        fifo = TestRun.current.temporaryPath("lines")
        guard mkfifo(fifo, 0o600) == 0 else { throw TestSocketError("mkfifo \(fifo)", errno: errno) }
        let script = """
            import socket, ssl, struct, sys
            c = ssl.create_default_context(cafile=sys.argv[2]); c.load_cert_chain(sys.argv[3], sys.argv[4])
            s = c.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20), server_hostname="gateway.test")
            s.sendall(bytes([5, 1, 0])); s.recv(2)
            s.sendall(bytes([5, 1, 0, 1, 127, 0, 0, 1]) + struct.pack(">H", int(sys.argv[5]))); s.recv(10)
            for line in open(sys.argv[6]):
                s.sendall(line.encode()); print("echo:" + s.recv(100).decode().strip(), file=sys.stderr, flush=True)
            """
        process = try BackgroundProcess(
            which("python3") ?? "/usr/bin/python3",
            ["-c", script, "\(port)", pki + "/ca.pem", pki + "/alice.pem", pki + "/alice.key", "\(echo)", fifo], environment: withoutWrappers)
        // Opening the FIFO to write waits for the reader: off the cooperative pool.
        let path = fifo
        writer = try await onThread { open(path, O_WRONLY | O_CLOEXEC) }
        guard writer >= 0 else { throw TestSocketError("open \(fifo)", errno: errno) }
    }

    /// Sends `text` through the session; true when it came back.
    func roundTrip(_ text: String, count: Int) async -> Bool {
        let line = Array((text + "\n").utf8)
        guard write(writer, line, line.count) == line.count else { return false }
        return await process.waitForStderr(containing: "echo:\(text)", count: count, timeout: 20)
    }

    func close() {
        Glibc.close(writer)
        process.signal(SIGTERM)
        unlink(fifo)
    }
}
