import SallyportTestSupport
import Foundation
import SOCKSProtocol
import Testing

/// Real clients against a real server on loopback. `make test` installs every client; a missing one
/// fails the test rather than skipping it.
@Suite(.system, .timeLimit(.minutes(3))) struct InteropTests {
    static let body = "hello from the target, through sallyport\n"

    func tool(_ name: String) throws -> String {
        try #require(which(name), "\(name) is not installed; `make test` installs it (see Makefile)")
    }

    /// Environment that keeps proxy variables of the machine out of the clients' way.
    // No proxy variables of the machine; no pam_wrapper (clients need none, and its set-up races
    // between programs that start at once).
    let cleanEnvironment = ["http_proxy": "", "https_proxy": "", "all_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": "", "ALL_PROXY": "", "no_proxy": "", "LD_PRELOAD": ""]

    @Test(arguments: ["socks5h", "socks5"])
    func curlFetchesThroughTheProxy(scheme: String) async throws {
        let curl = try tool("curl")
        let http = try await TargetServer.start { HTTPResponder(body: Self.body) }
        let proxy = try await TestProxy.start()
        let result = try await runProcess(
            curl, ["-sS", "--max-time", "10", "-x", "\(scheme)://127.0.0.1:\(proxy.port)", "http://localhost:\(http.port)/path"],
            environment: cleanEnvironment)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == Self.body)
        // socks5h sends the name for the proxy to resolve; socks5 resolves it in curl.
        #expect(await proxy.logs.wait { $0.contains { $0.contains("reply=0") } })
        let dst = logfmtFields(proxy.logs.sessionLines.first ?? "")["dst"] ?? ""
        #expect(scheme == "socks5h" ? dst == "localhost:\(http.port)" : dst.hasPrefix("127.0.0.1:") || dst.hasPrefix("[::1]:"))
        await proxy.stop()
        await http.stop()
    }

    @Test func curlWithCredentialsThroughTheUsernameMethod() async throws {
        let curl = try tool("curl")
        let http = try await TargetServer.start { HTTPResponder(body: Self.body) }
        let proxy = try await TestProxy.start(
            configure: { $0.listeners[0].methods = [.usernamePassword] }, authenticator: TestAuthenticator())
        let good = try await runProcess(
            curl, ["-sS", "--max-time", "10", "-x", "socks5h://dave:pw-dave@127.0.0.1:\(proxy.port)", "http://localhost:\(http.port)/"],
            environment: cleanEnvironment)
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.stdout == Self.body)
        let bad = try await runProcess(
            curl, ["-sS", "--max-time", "10", "-x", "socks5h://dave:wrong@127.0.0.1:\(proxy.port)", "http://localhost:\(http.port)/"],
            environment: cleanEnvironment)
        #expect(bad.status != 0)
        #expect(bad.stdout.isEmpty)
        await proxy.stop()
        await http.stop()
    }

    @Test func ncatSOCKS5ConnectEchoes() async throws {
        let ncat = try tool("ncat")
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start()
        let input = Data((0..<2000).map { "line \($0)\n" }.joined().utf8)
        let result = try await runProcess(
            ncat, ["--proxy", "127.0.0.1:\(proxy.port)", "--proxy-type", "socks5", "127.0.0.1", "\(echo.port)"],
            input: input, timeout: 20)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(Data(result.stdout.utf8) == input)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("up=\(input.count) down=\(input.count)") } })
        await proxy.stop()
        await echo.stop()
    }

    @Test func openBSDNetcatAsSSHProxyCommand() async throws {
        // What `ssh -o ProxyCommand='nc -X 5 -x 127.0.0.1:1080 %h %p'` runs; the target speaks first,
        // as an SSH server does.
        let nc = try tool("nc.openbsd")
        let banner = try await TargetServer.start { BannerHandler(banner: "SSH-2.0-OpenSSH_Test\r\n") }
        let proxy = try await TestProxy.start()
        let result = try await runProcess(
            nc, ["-N", "-w", "5", "-X", "5", "-x", "127.0.0.1:\(proxy.port)", "localhost", "\(banner.port)"],
            input: Data("SSH-2.0-Client\r\n".utf8), timeout: 20)
        #expect(result.stdout.hasPrefix("SSH-2.0-OpenSSH_Test\r\n"), "\(result.stderr)")
        #expect(result.stdout.contains("SSH-2.0-Client\r\n"))
        await proxy.stop()
        await banner.stop()
    }

    @Test func proxychainsRoutesAnUnawareProgram() async throws {
        let proxychains = try tool("proxychains4")
        let curl = try tool("curl")
        let http = try await TargetServer.start { HTTPResponder(body: Self.body) }
        let proxy = try await TestProxy.start()
        let config = try temporaryFile(
            """
            strict_chain
            quiet_mode
            proxy_dns
            tcp_read_time_out 15000
            tcp_connect_time_out 8000
            [ProxyList]
            socks5 127.0.0.1 \(proxy.port)
            """, suffix: ".conf")
        let result = try await runProcess(
            proxychains, ["-q", "-f", config, curl, "-sS", "--max-time", "10", "http://127.0.0.1:\(http.port)/"],
            environment: cleanEnvironment)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == Self.body)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("dst=127.0.0.1:\(http.port)") && $0.contains("reply=0") } })
        await proxy.stop()
        await http.stop()
    }

    @Test func pySocksTCPWithAndWithoutCredentials() async throws {
        let python = "/usr/bin/python3"
        let echo = try await TargetServer.echo()
        let open = try await TestProxy.start()
        let authenticated = try await TestProxy.start(
            configure: { $0.listeners[0].methods = [.usernamePassword] }, authenticator: TestAuthenticator())
        let script = """
            import hashlib, socket, sys, socks
            proxy_port, echo_port, user, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
            s = socks.socksocket(socket.AF_INET, socket.SOCK_STREAM)
            s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port, rdns=True,
                        username=user or None, password=password or None)
            s.settimeout(10)
            try:
                s.connect(("localhost", echo_port))
            except socks.ProxyError as error:
                print("proxy-error", error)
                sys.exit(3)
            data = bytes(range(256)) * 2048
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            back = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                back += chunk
            print(len(back), hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest())
            """
        let path = try temporaryFile(script, suffix: ".py")
        let plain = try await runProcess(python, [path, "\(open.port)", "\(echo.port)", "", ""])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(plain.stdout == "524288 True\n")
        let withCredentials = try await runProcess(python, [path, "\(authenticated.port)", "\(echo.port)", "erin", "pw-erin"])
        #expect(withCredentials.stdout == "524288 True\n", "\(withCredentials.stderr)")
        let wrong = try await runProcess(python, [path, "\(authenticated.port)", "\(echo.port)", "erin", "nope"])
        #expect(wrong.status == 3, "\(wrong.stdout) \(wrong.stderr)")
        #expect(wrong.stdout.contains("proxy-error"))
        await open.stop()
        await authenticated.stop()
        await echo.stop()
    }

    @Test func pySocksUDPThroughAnAssociation() async throws {
        let echo = try await UDPEchoServer.start()
        let proxy = try await TestProxy.start()
        let script = """
            import socket, sys, socks
            proxy_port, echo_port = int(sys.argv[1]), int(sys.argv[2])
            s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
            s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port, rdns=True)
            s.settimeout(5)
            s.bind(("127.0.0.1", 0))   # PySocks sends UDP ASSOCIATE here, naming this port
            ok = 0
            for i in range(200):
                target = ("127.0.0.1", echo_port) if i % 2 == 0 else ("localhost", echo_port)
                payload = b"datagram-%d-" % i + bytes(range(256))
                s.sendto(payload, target)
                data, sender = s.recvfrom(65536)
                if data == payload and sender[1] == echo_port:
                    ok += 1
            print(ok)
            """
        let path = try temporaryFile(script, suffix: ".py")
        let result = try await runProcess("/usr/bin/python3", [path, "\(proxy.port)", "\(echo.port)"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "200\n")
        await proxy.stop()
        #expect(await proxy.logs.wait { $0.contains { $0.contains("cmd=udp") && $0.contains("dgrams_up=200 dgrams_down=200") && $0.contains("destinations=2") } })
        await echo.stop()
    }
}
