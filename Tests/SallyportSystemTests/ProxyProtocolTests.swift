import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Sallyport
import SallyportPolicy
import Testing

/// A listener behind a load balancer (PROXY protocol), over real sockets: the header's client is
/// the session's client for rules, limits and the log; anything else is closed before a SOCKS byte.
@Suite(.system, .timeLimit(.minutes(3))) struct ProxyProtocolTests {
    static let v1 = Array("PROXY TCP4 192.0.2.7 198.51.100.1 40123 1080\r\n".utf8)
    static let v2Header: [UInt8] = ProxyHeaderBytes.v2(source: [192, 0, 2, 7], port: 40123)

    func proxy(_ version: ProxyProtocolVersion = .any, trusted: String = "127.0.0.0/8", configure: @escaping (inout ServerConfiguration) -> Void = { _ in })
        async throws -> TestProxy
    {
        try await TestProxy.start { configuration in
            configuration.listeners[0].proxyProtocol = ProxyExpectation(version: version, trusted: [CIDR(trusted)!])
            // Method none behind a balancer serves whoever the balancer lets in: said on purpose.
            configuration.allowUnauthenticatedRemote = true
            configure(&configuration)
        }
    }

    /// Sends `header`, then a CONNECT to the echo with one byte: split into single bytes or in one
    /// segment with the greeting. The reply code, or nil when the proxy closed first.
    func connect(_ port: Int, header: [UInt8], echo: Int, split: Bool) throws -> SOCKSReplyCode? {
        let socket = try TestSocket(host: "127.0.0.1", port: port)
        let bytes = header + TestSocket.negotiation(.connect, to: loopback4(echo)) + [7]
        if split {
            for byte in bytes { try socket.send([byte]) }
        } else {
            try socket.send(bytes)
        }
        guard let method = try? socket.receive(exactly: 2), method == [5, 0] else { return nil }
        let reply = try socket.readReply()
        if reply.code == .succeeded { _ = try socket.receive(exactly: 1) }
        return reply.code
    }

    @Test(arguments: [true, false])
    func v1AndV2HeadersGiveTheClientToTheLog(split: Bool) async throws {
        let echo = try await TargetServer.echo()
        let proxy = try await proxy()
        for header in [Self.v1, Self.v2Header] {
            let code = try await onThread { try connect(proxy.port, header: header, echo: echo.port, split: split) }
            #expect(code == .succeeded)
        }
        #expect(await proxy.logs.wait { $0.filter { $0.contains(" msg=session ") }.count == 2 })
        for line in proxy.logs.sessionLines {
            #expect(logfmtFields(line)["client"] == "192.0.2.7:40123", "\(line)")
            #expect(logfmtFields(line)["end"] == "client_closed" || logfmtFields(line)["end"] == "target_closed", "\(line)")
        }
        await proxy.stop()
        await echo.stop()
    }

    @Test(arguments: [1, 2], [true, false])
    func clientRulesAndLimitsSeeTheHeadersClient(version: Int, split: Bool) async throws {
        @Sendable func header(_ source: String) -> [UInt8] {
            guard version == 2 else { return ProxyHeaderBytes.v1(source: source) }
            return ProxyHeaderBytes.v2(source: source.split(separator: ".").map { UInt8($0)! }, port: 40123)
        }
        let echo = try await TargetServer.echo()
        let proxy = try await proxy { configuration in
            configuration.policy.clientRules = [
                ClientRule(action: .deny, from: [CIDR("192.0.2.0/24")!]), ClientRule(action: .allow, from: [CIDR("0.0.0.0/0")!]),
            ]
            configuration.limits.sessionsPerClient = 1
        }
        let denied = header("192.0.2.7")
        let (refused, first, second, other) = try await onThread { () throws -> (SOCKSReplyCode?, TestSocket, SOCKSReplyCode, SOCKSReplyCode) in
            let refused = try connect(proxy.port, header: denied, echo: echo.port, split: split)
            // One session at a time for 198.51.100.9, whatever the balancer's address.
            let first = try TestSocket(host: "127.0.0.1", port: proxy.port)
            try first.send(header("198.51.100.9") + TestSocket.negotiation(.connect, to: loopback4(echo.port)))
            _ = try first.receive(exactly: 2)
            _ = try first.readReply()
            let second = try connect(proxy.port, header: header("198.51.100.9"), echo: echo.port, split: split)
            let other = try connect(proxy.port, header: header("198.51.100.10"), echo: echo.port, split: split)
            return (refused, first, second ?? .generalFailure, other ?? .generalFailure)
        }
        #expect(refused == nil, "a client the rules deny is closed before any byte")
        #expect(second == .notAllowed, "over sessions_per_client: reply 0x02, as the README says")
        #expect(other == .succeeded)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("client=192.0.2.7:") && $0.contains("end=client_denied") } })
        _ = first
        await proxy.stop()
        await echo.stop()
    }

    @Test func untrustedPeersMissingOrMalformedHeadersAndLocalAreClosed() async throws {
        let echo = try await TargetServer.echo()
        let untrusted = try await proxy(trusted: "10.0.0.0/8")
        let strict = try await proxy(.v2)
        let cases: [(TestProxy, [UInt8], String)] = [
            (untrusted, Self.v1, "proxy_refused"),  // the balancer is not trusted
            (untrusted, Self.v2Header, "proxy_refused"),
            (strict, [], "proxy_refused"),  // SOCKS straight away
            (strict, Self.v1, "proxy_refused"),  // v1 where v2 is expected
            (strict, ProxyHeader.signature + [0x31, 0x11, 0, 0], "proxy_refused"),  // malformed
            (strict, ProxyHeader.signature + [0x20, 0x00, 0, 0], "proxy_local"),  // a health check
        ]
        var ended: [String: Int] = [:]
        for (proxy, header, end) in cases {
            let key = "\(proxy.port) \(end)"
            let expected = ended[key, default: 0] + 1
            ended[key] = expected
            let (first, closed) = try await onThread { () throws -> (Int, Bool) in
                let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
                try socket.send(header + [5, 1, 0])
                // The first read: 0 is a close without a byte (a reset, with our bytes unread, too).
                var byte: UInt8 = 0
                let got = recv(socket.fd, &byte, 1, 0)
                return (got, got == 0 || (got < 0 && errno == ECONNRESET))
            }
            #expect(closed, "\(end): the proxy answered (\(first)) instead of closing")
            #expect(await proxy.logs.wait { $0.filter { $0.contains("end=\(end)") }.count == expected }, "\(end) \(header)")
        }
        await untrusted.stop()
        await strict.stop()
        await echo.stop()
    }

    @Test func aListenerNeedsTrustedProxiesWithTheProtocol() async throws {
        let path = try temporaryFile("listen:\n  - address: 127.0.0.1:0\n    proxy_protocol: v2\n")
        let result = try await runProcess(sallyportExecutable(), ["check-config", path])
        #expect(result.status == 1)
        #expect(result.stderr.contains("proxy_protocol needs trusted_proxies"), "\(result.stderr)")
    }
}

/// PROXY protocol headers for tests.
enum ProxyHeaderBytes {
    static func v1(source: String, port: Int = 40123) -> [UInt8] {
        Array("PROXY TCP4 \(source) 198.51.100.1 \(port) 1080\r\n".utf8)
    }

    static func v2(source: [UInt8], port: UInt16) -> [UInt8] {
        let body = source + [198, 51, 100, 1] + [UInt8(port >> 8), UInt8(port & 0xFF), 0x04, 0x38]
        return ProxyHeader.signature + [0x21, 0x11, 0, UInt8(body.count)] + body
    }
}
