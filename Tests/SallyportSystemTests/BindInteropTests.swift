import SallyportTestSupport
import Foundation
import Testing

/// BIND with a real client: Dante's `socksify` running an active-mode FTP transfer (tnftp) against
/// an FTP server (pyftpdlib) in a network namespace of the test's own, through Sallyport. The FTP
/// server connects back to the address the first BIND reply named, as RFC 1928 intends.
@Suite(.system, .timeLimit(.minutes(3))) struct BindInteropTests {
    static let ftpServer = """
        import sys
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.servers import FTPServer
        authorizer = DummyAuthorizer()
        authorizer.add_anonymous(sys.argv[1])
        FTPHandler.authorizer = authorizer
        server = FTPServer((sys.argv[2], 0), FTPHandler)
        print("port=%d" % server.socket.getsockname()[1], file=sys.stderr, flush=True)
        server.serve_forever()
        """

    @Test func socksifiedActiveFTPFetchesAFileThroughBind() async throws {
        let socksify = try #require(which("socksify"), "socksify (Debian dante-client) is not installed; `make test` installs it")
        let ftp = try #require(which("tnftp"), "tnftp (Debian ftp) is not installed; `make test` installs it")
        // Debian's python3, which python3-pyftpdlib installs into (not a python3 earlier on PATH).
        let python = "/usr/bin/python3"
        let site = try temporaryDirectory("ftp-site")
        let content = String(repeating: "a file fetched over an active-mode data connection\n", count: 2_000)
        try content.write(toFile: site + "/file.txt", atomically: true, encoding: .utf8)
        let fetched = TestRun.current.temporaryPath("fetched") + ".txt"
        try await withCable { cable in
            let ip = which("ip") ?? "/usr/sbin/ip"
            let server = try BackgroundProcess(
                ip, ["netns", "exec", cable.namespace, python, "-c", Self.ftpServer, site, cable.farIP], environment: withoutWrappers)
            defer { server.signal(SIGTERM) }
            #expect(await server.waitForStderr(containing: "port="), "\(server.stderr)")
            let ftpPort = try #require(server.stderr.split(separator: "\n").first { $0.hasPrefix("port=") }.flatMap { Int($0.dropFirst(5)) })
            // The proxy on this side of the link: the FTP server reaches its BIND sockets there.
            let proxy = try await ServerProcess.start(
                """
                listen: [\(cable.hostIP):0]
                methods: [none]
                allow_unauthenticated_remote: true
                rules:
                  - {name: ftp-server, action: allow, to: [\(cable.farIP)/32], commands: [connect, bind]}
                default_action: deny
                """)
            defer { proxy.process.signal(SIGTERM) }
            let socksConf = try temporaryFile(
                """
                route {
                    from: 0.0.0.0/0 to: 0.0.0.0/0 via: \(cable.hostIP) port = \(proxy.port)
                    proxyprotocol: socks_v5
                    method: none
                }

                """, suffix: ".conf")
            let script = "user anonymous test@example.com\nbinary\nget file.txt \(fetched)\nquit\n"
            var environment = withoutWrappers
            environment["SOCKS_CONF"] = socksConf
            let transfer = try await runProcess(
                socksify, [ftp, "-A", "-n", "-v", cable.farIP, "\(ftpPort)"], input: Data(script.utf8), environment: environment)
            let log = "\(transfer.stdout) \(transfer.stderr) \(proxy.process.stderr)"
            #expect(FileManager.default.contents(atPath: fetched) == Data(content.utf8), "\(log)")
            // The data connection came through a BIND whose peer was the FTP server.
            #expect(await proxy.process.waitForStderr(containing: "cmd=bind", count: 1), "\(log)")
            let sessions = proxy.process.stderr.split(separator: "\n").filter { $0.contains("msg=session") }.map { logfmtFields(String($0)) }
            let bind = try #require(sessions.first { $0["cmd"] == "bind" }, "\(log)")
            #expect(bind["remote"]?.hasPrefix(cable.farIP + ":") == true && bind["rule"] == "ftp-server", "\(bind)")
            #expect(Int(bind["down"] ?? "") ?? 0 >= content.utf8.count, "\(bind)")
        }
    }
}
