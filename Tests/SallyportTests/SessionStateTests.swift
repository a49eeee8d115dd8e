import NIOCore
import NIOEmbedded
import SOCKSProtocol
import SallyportAuth
import SallyportPolicy
import SallyportTestSupport
import Testing

@testable import Sallyport

/// Every transition of `Session.State` over an EmbeddedChannel, and what each one gives back: the
/// timer, the lookups, the login waiter, the limiter's grant and the registry entry. (The UDP
/// association needs a real event loop: `associated` is walked by the UDP system tests.)
@Suite(.timeLimit(.minutes(1))) struct SessionStateTests {
    static let target = SOCKSHost.ipv4(SOCKSIPv4Address(203, 0, 113, 9))
    static let balancers = ProxyExpectation(version: .v1, trusted: [CIDR("198.51.100.0/24")!])

    /// A connected target for the fake connector to hand over.
    static func answerConnect(_ harness: SessionHarness) throws -> EmbeddedChannel {
        // The relay takes only connected channels: the client side is "connected" now too.
        if !harness.channel.isActive { try harness.channel.connect(to: harness.channel.remoteAddress!).wait() }
        let target = EmbeddedChannel(loop: harness.channel.embeddedEventLoop)
        target.localAddress = try SocketAddress(ipAddress: "192.0.2.44", port: 5555)
        try target.connect(to: SocketAddress(ipAddress: "203.0.113.9", port: 80)).wait()
        try #require(harness.connector.asked.first).promise.succeed(target)
        harness.channel.embeddedEventLoop.run()
        return target
    }

    @Test func negotiatingThenRequestingThenRelayingThenFinishedHoldsTheGrantUntilTheEnd() throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        #expect(harness.session.stateName == "negotiating")
        #expect(harness.registry.count == 1)
        try harness.send(SessionHarness.connect(Self.target))
        #expect(harness.session.stateName == "requesting(dialing)")
        #expect(harness.limiter.held == 1)
        let target = try Self.answerConnect(harness)
        #expect(harness.session.stateName == "relaying")
        #expect(harness.limiter.held == 1, "the relay keeps the request's grant")
        // Past the negotiation timeout: the negotiation timer was cancelled when the request came.
        harness.channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(harness.channel.isActive)
        _ = try? target.close().wait()
        harness.channel.embeddedEventLoop.run()
        #expect(harness.session.stateName == "finished")
        #expect(harness.limiter.held == 0)
        #expect(harness.registry.count == 0)
        #expect(harness.logs.sessionLines.count == 1)
    }

    @Test func negotiatingTimesOutIntoClosingThenFinished() throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        try harness.send([5, 1])
        harness.channel.embeddedEventLoop.advanceTime(by: Timeouts().negotiation - .milliseconds(1))
        #expect(harness.session.stateName == "negotiating")
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(harness.session.stateName == "finished")
        #expect(harness.accessLog?["end"] == "negotiation_timeout")
        #expect(harness.registry.count == 0)
    }

    @Test func authenticatingReturnsToNegotiatingOnSuccessAndTheRequestFollows() throws {
        let harness = try SessionHarness(methods: [.usernamePassword])
        defer { harness.close() }
        try harness.send([5, 1, 2, 1, 5] + Array("alice".utf8) + [2] + Array("pw".utf8))
        #expect(harness.session.stateName == "authenticating")
        let request = try #require(harness.authenticator.requests.first)
        #expect(request.stillWanted())
        try #require(harness.authenticator.asked.first).succeed(.success(Identity(user: "alice")))
        harness.channel.embeddedEventLoop.run()
        #expect(harness.session.stateName == "negotiating")
        var connect = ByteBuffer()
        connect.writeSOCKSRequest(SOCKSRequest(command: .connect, destination: SOCKSEndpoint(host: Self.target, port: 80)))
        try harness.send(Array(connect.readableBytesView))
        #expect(harness.session.stateName == "requesting(dialing)")
        #expect(harness.limiter.held == 1)
    }

    @Test func authenticatingFailsIntoClosing() throws {
        let harness = try SessionHarness(methods: [.usernamePassword])
        defer { harness.close() }
        try harness.send([5, 1, 2, 1, 1, 0x61, 1, 0x62])
        try #require(harness.authenticator.asked.first).succeed(.failure(reason: "wrong"))
        harness.channel.embeddedEventLoop.run()
        #expect(harness.session.stateName == "finished")
        #expect(harness.accessLog?["end"] == "auth_failed")
    }

    @Test func leavingAuthenticatingTellsTheWaiterAndALateAnswerIsMoot() throws {
        let harness = try SessionHarness(methods: [.usernamePassword])
        defer { harness.close() }
        try harness.send([5, 1, 2, 1, 1, 0x61, 1, 0x62])
        let request = try #require(harness.authenticator.requests.first)
        _ = try? harness.channel.close().wait()
        #expect(harness.session.stateName == "finished")
        #expect(!request.stillWanted(), "the checker is told the client left")
        try #require(harness.authenticator.asked.first).succeed(.success(Identity(user: "a")))
        harness.channel.embeddedEventLoop.run()
        #expect(harness.session.stateName == "finished")
        #expect(harness.logs.sessionLines.count == 1)
    }

    @Test func requestingDeniedGivesTheGrantBackAtTheReply() throws {
        let policy = Policy(rules: [EgressRule(name: "no-docs", action: .deny, to: [.block(CIDR("203.0.113.0/24")!)])], defaultAction: .allow)
        let harness = try SessionHarness(policy: policy)
        defer { harness.close() }
        try harness.send(SessionHarness.connect(Self.target))
        #expect(try harness.written() == [5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0])
        // The reply is on its way; the grant is back before the channel has closed.
        #expect(harness.limiter.held == 0)
        #expect(harness.accessLog?["rule"] == "no-docs")
    }

    @Test func requestingResolvingTimesOutWithTheLookupDroppedAndTheGrantBack() throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        try harness.send(SessionHarness.connect(.domain("slow.example")))
        #expect(harness.session.stateName == "requesting(resolving)")
        let ticket = try #require(harness.resolver.asked.first?.ticket)
        harness.channel.embeddedEventLoop.advanceTime(by: Timeouts().connect)
        #expect(ticket.isCancelled)
        #expect(harness.limiter.held == 0)
        #expect(harness.accessLog?["reply"] == "4")
        // A late answer dials nothing.
        try #require(harness.resolver.asked.first).promise.succeed(.resolved([IPAddress("203.0.113.5")!]))
        harness.channel.embeddedEventLoop.run()
        #expect(harness.connector.asked.isEmpty)
    }

    @Test func requestingOverTheLimitRefusesWithTheEndsReplyCode() throws {
        var limits = Limits()
        limits.maxSessions = 1
        let first = try SessionHarness(limits: limits)
        defer { first.close() }
        // Both harnesses share nothing: take the one grant of the second's limiter by hand.
        let second = try SessionHarness(limits: limits)
        defer { second.close() }
        _ = second.limiter.acquire(user: nil, client: ClientNetwork(try SocketAddress(ipAddress: "198.51.100.7", port: 1)), limits: limits)
        try second.send(SessionHarness.connect(Self.target))
        #expect(try second.written() == [5, 0, 5, SessionEnd.limit(.server(1)).reply!.rawValue, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(second.accessLog?["end"] == "limit_server")
        #expect(second.limiter.held == 1, "only the grant taken by hand is held")
    }

    @Test func awaitingTheProxyHeaderThenNegotiatingWithTheHeadersClient() throws {
        let harness = try SessionHarness(proxy: Self.balancers)
        defer { harness.close() }
        #expect(harness.session.stateName == "awaiting_proxy_header")
        try harness.send(Array("PROXY TCP4 192.0.2.77 198.51.100.1 40001 1080\r\n".utf8))
        #expect(harness.session.stateName == "negotiating")
        try harness.send(SessionHarness.connect(Self.target))
        let target = try Self.answerConnect(harness)
        _ = try? target.close().wait()
        harness.channel.embeddedEventLoop.run()
        #expect(harness.accessLog?["client"] == "192.0.2.77:40001")
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\n", "proxy_refused"), ("PROXY UNKNOWN\r\n", "proxy_local"),
    ])
    func awaitingTheProxyHeaderClosesOnABadOrLocalHeader(header: String, end: String) throws {
        let harness = try SessionHarness(proxy: Self.balancers)
        defer { harness.close() }
        try harness.send(Array(header.utf8))
        #expect(harness.session.stateName == "finished")
        #expect(harness.accessLog?["end"] == end)
    }

    @Test func anUntrustedPeerOfAProxyListenerIsClosedAtAccept() throws {
        let harness = try SessionHarness(proxy: ProxyExpectation(version: .v1, trusted: [CIDR("10.0.0.0/8")!]))
        defer { harness.close() }
        #expect(harness.session.stateName == "finished")
        #expect(harness.accessLog?["end"] == "proxy_refused")
        #expect(harness.registry.count == 0)
    }

    @Test func relayingClosedByTheAdminEndsWithThatEnd() throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        try harness.send(SessionHarness.connect(Self.target))
        _ = try Self.answerConnect(harness)
        harness.session.closeByAdmin()
        harness.channel.embeddedEventLoop.run()
        #expect(harness.session.stateName == "finished")
        #expect(harness.accessLog?["end"] == "closed_by_admin")
        #expect(harness.limiter.held == 0)
    }

    @Test func endsThatRefuseARequestKnowTheirReplyCode() {
        #expect(SessionEnd.limit(.server(1)).reply == .generalFailure)
        #expect(SessionEnd.limit(.user(1)).reply == .notAllowed)
        #expect(SessionEnd.limit(.client(1)).reply == .notAllowed)
        #expect(SessionEnd.denied(.defaultAction).reply == .notAllowed)
        #expect(SessionEnd.requestFailed(.ttlExpired).reply == .ttlExpired)
        #expect(SessionEnd.negotiationTimeout.reply == nil)
        #expect(SessionEnd.clientError.reply == nil)
    }
}
