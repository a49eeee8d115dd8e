import SallyportTestSupport
import Foundation
import SOCKSProtocol
import SallyportPolicy
import Testing

/// SOCKS4 and SOCKS4a through curl, on a listener that serves them: anonymous to the rules, the
/// user id logged, and nothing of it on a listener that does not.
@Suite(.system, .timeLimit(.minutes(3))) struct SOCKS4InteropTests {
    static let body = "hello over socks4\n"
    // No proxy variables of the machine; no pam_wrapper (clients need none, and its set-up races
    // between programs that start at once).
    let cleanEnvironment = ["http_proxy": "", "https_proxy": "", "all_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": "", "ALL_PROXY": "", "no_proxy": "", "LD_PRELOAD": ""]

    func curl(_ proxy: String, _ url: String) async throws -> ProcessResult {
        let curl = try #require(which("curl"), "curl is not installed; `make test` installs it")
        return try await runProcess(curl, ["-sS", "--max-time", "10", "-x", proxy, url], environment: cleanEnvironment)
    }

    @Test(arguments: ["socks4", "socks4a"])
    func curlFetchesThroughSOCKS4(scheme: String) async throws {
        let http = try await TargetServer.start { HTTPResponder(body: Self.body) }
        let proxy = try await TestProxy.start { $0.listeners[0].socks4 = true }
        let result = try await curl("\(scheme)://carol@127.0.0.1:\(proxy.port)", "http://localhost:\(http.port)/")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == Self.body)
        #expect(await proxy.logs.wait { $0.contains { $0.contains(" msg=session ") } })
        let fields = logfmtFields(proxy.logs.sessionLines.first ?? "")
        // 4a hands the name to the proxy; 4 resolves it in curl.
        #expect(fields["dst"] == (scheme == "socks4a" ? "localhost:\(http.port)" : "127.0.0.1:\(http.port)"), "\(fields)")
        #expect(fields["reply"] == "90")
        #expect(fields["socks4_user"] == "carol", "the user id is logged")
        #expect(fields["user"] == "-", "and not taken for a user")
        await proxy.stop()
        await http.stop()
    }

    @Test func socks4SessionsAreAnonymousToTheRules() async throws {
        let http = try await TargetServer.start { HTTPResponder(body: Self.body) }
        let proxy = try await TestProxy.start { configuration in
            configuration.listeners[0].socks4 = true
            configuration.policy.rules = [
                EgressRule(name: "members-only", action: .allow, who: [.authenticated], to: [.block(CIDR("127.0.0.0/8")!)])
            ]
        }
        // A user id naming someone is no login.
        let result = try await curl("socks4a://alice@127.0.0.1:\(proxy.port)", "http://localhost:\(http.port)/")
        #expect(result.status != 0)
        #expect(await proxy.logs.wait { $0.contains { $0.contains(" msg=session ") } })
        let fields = logfmtFields(proxy.logs.sessionLines.first ?? "")
        #expect(fields["reply"] == "91", "\(fields)")
        #expect(fields["end"] == "denied", "\(fields)")
        await proxy.stop()
        await http.stop()
    }

    @Test func aListenerWithoutSOCKS4ClosesSOCKS4Clients() async throws {
        let http = try await TargetServer.start { HTTPResponder(body: Self.body) }
        let proxy = try await TestProxy.start()
        let result = try await curl("socks4a://127.0.0.1:\(proxy.port)", "http://localhost:\(http.port)/")
        #expect(result.status != 0)
        #expect(await proxy.logs.wait { $0.contains { $0.contains(" msg=session ") && $0.contains("end=protocol_error") } }, "\(proxy.logs.sessionLines)")
        await proxy.stop()
        await http.stop()
    }

    @Test func aNonLoopbackSOCKS4ListenerNeedsItSaidExplicitly() async throws {
        let path = try temporaryFile("listen:\n  - address: 192.0.2.1:1080\n    socks4: true\n")
        let result = try await runProcess(sallyportExecutable(), ["check-config", path])
        #expect(result.status == 1)
        #expect(result.stderr.contains("serves socks4, which carries no password"), "\(result.stderr)")
    }
}
