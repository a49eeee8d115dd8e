import SallyportTestSupport
import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import SOCKSProtocol
import SallyportAuth
import SallyportPolicy
import SallyportRelay
import Testing

@testable import Sallyport

// EmbeddedChannel tests run on the test's own thread: the fakes below are touched from it alone.

/// Lookups the test answers by hand.
final class FakeResolver: NameResolving, @unchecked Sendable {
    var asked: [(name: String, ticket: LookupTicket?, promise: EventLoopPromise<ResolveOutcome>)] = []

    func resolve(_ name: String, client: ClientNetwork, ticket: LookupTicket?, on eventLoop: any EventLoop) -> EventLoopFuture<ResolveOutcome> {
        let promise = eventLoop.makePromise(of: ResolveOutcome.self)
        asked.append((name, ticket, promise))
        return promise.futureResult
    }
}

/// Connects the test answers by hand.
final class FakeConnector: OutboundConnecting, @unchecked Sendable {
    var asked: [(addresses: [SocketAddress], timeout: TimeAmount, promise: EventLoopPromise<any Channel>)] = []

    func connect(
        to addresses: [SocketAddress], name: String, port: Int, binding: OutboundBinding?, timeout: TimeAmount, on eventLoop: any EventLoop
    ) -> EventLoopFuture<any Channel> {
        let promise = eventLoop.makePromise(of: (any Channel).self)
        asked.append((addresses, timeout, promise))
        return promise.futureResult
    }
}

/// Answers each login by hand.
final class FakeAuthenticator: Authenticator, @unchecked Sendable {
    var asked: [EventLoopPromise<AuthenticationResult>] = []
    var requests: [AuthenticationRequest] = []

    func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let promise = eventLoop.makePromise(of: AuthenticationResult.self)
        asked.append(promise)
        requests.append(request)
        return promise.futureResult
    }
}

/// One session over an EmbeddedChannel, with fakes for everything outside it.
struct SessionHarness {
    let channel = EmbeddedChannel()
    let resolver = FakeResolver()
    let connector = FakeConnector()
    let authenticator = FakeAuthenticator()
    let logs = LogCapture()
    let limiter = SessionLimiter()
    let timeouts: Timeouts
    let session: Session

    let registry = SessionRegistry()

    init(
        methods: [AuthenticationMethod] = [.none], policy: Policy = .allowPublic, limits: Limits = Limits(), timeouts: Timeouts = Timeouts(),
        proxy: ProxyExpectation? = nil
    ) throws {
        self.timeouts = timeouts
        let services = SessionServices(
            timeouts: timeouts, limits: limits, egress: Egress(policy: policy, resolver: resolver), authenticator: authenticator,
            connector: connector, logger: logs.logger(label: "sallyport"), accessLogger: logs.logger(label: "sallyport.access"),
            registry: registry, limiter: limiter, udp: UDPSettings())
        let negotiation = ServerNegotiation.Configuration(methods: methods, commands: [.connect, .udpAssociate], maximumEarlyData: 1024)
        channel.remoteAddress = try SocketAddress(ipAddress: "198.51.100.7", port: 40_000)
        channel.localAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 1080)
        session = Session(services: services, negotiation: negotiation, listener: "test", proxy: proxy)
        // As the server builds it: the PROXY header's reader first, when one is expected.
        if let proxy { try channel.pipeline.syncOperations.addHandler(ProxyHeaderReader(session: session, version: proxy.version, tls: nil)) }
        try channel.pipeline.syncOperations.addHandler(SOCKSServerHandler(session: session))
        channel.pipeline.fireChannelActive()
    }

    /// Feeds bytes, all at once or one at a time.
    func send(_ bytes: [UInt8], oneByOne: Bool = false) throws {
        if oneByOne {
            for byte in bytes { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
        } else {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        }
        channel.embeddedEventLoop.run()
    }

    /// Ends the test's session: answers what the fakes still hold and closes the channel, so that
    /// nothing is left waiting (and leaking) when the test returns.
    func close() {
        for asked in resolver.asked { asked.promise.completeWith(.success(.cancelled)) }
        for asked in connector.asked { asked.promise.fail(ChannelError.ioOnClosedChannel) }
        for promise in authenticator.asked { promise.succeed(.failure(reason: "test over")) }
        resolver.asked.removeAll()
        connector.asked.removeAll()
        authenticator.asked.removeAll()
        channel.embeddedEventLoop.run()
        _ = try? channel.finish()
        channel.embeddedEventLoop.run()
    }

    /// Everything the server wrote so far.
    func written() throws -> [UInt8] {
        var bytes: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes += buffer.readableBytesView }
        return bytes
    }

    /// The access-log line's fields, once it is written.
    var accessLog: [String: String]? {
        logs.sessionLines.last.map(logfmtFields)
    }

    static func connect(_ host: SOCKSHost, port: UInt16 = 80) -> [UInt8] {
        var request = ByteBuffer()
        request.writeSOCKSRequest(SOCKSRequest(command: .connect, destination: SOCKSEndpoint(host: host, port: port)))
        return [5, 1, 0] + Array(request.readableBytesView)
    }
}

@Suite(.timeLimit(.minutes(1))) struct SessionHandlerTests {
    static let publicIP = SOCKSHost.ipv4(SOCKSIPv4Address(203, 0, 113, 9))

    @Test(arguments: [false, true])
    func connectByAddressRepliesWithTheOutboundSocketsAddress(oneByOne: Bool) throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        try harness.send(SessionHarness.connect(Self.publicIP), oneByOne: oneByOne)
        #expect(harness.connector.asked.count == 1)
        #expect(harness.connector.asked.first?.addresses == [try SocketAddress(ipAddress: "203.0.113.9", port: 80)])
        let target = EmbeddedChannel(loop: harness.channel.embeddedEventLoop)
        target.localAddress = try SocketAddress(ipAddress: "192.0.2.44", port: 5555)
        target.remoteAddress = try SocketAddress(ipAddress: "203.0.113.9", port: 80)
        harness.connector.asked.first?.promise.succeed(target)
        harness.channel.embeddedEventLoop.run()
        #expect(try harness.written() == [5, 0] + [5, 0, 0, 1, 192, 0, 2, 44, 0x15, 0xB3])
        _ = try? harness.channel.finish()
        _ = try? target.finish()
    }

    @Test(arguments: [
        (Int32(ECONNREFUSED), SOCKSReplyCode.connectionRefused), (ENETUNREACH, .networkUnreachable), (EHOSTUNREACH, .hostUnreachable),
        (ETIMEDOUT, .ttlExpired), (EACCES, .generalFailure),
    ])
    func connectFailuresGetTheirReplyCode(errno code: Int32, reply: SOCKSReplyCode) throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        try harness.send(SessionHarness.connect(Self.publicIP))
        harness.connector.asked.first?.promise.fail(IOError(errnoCode: code, reason: "connect"))
        harness.channel.embeddedEventLoop.run()
        #expect(try harness.written() == [5, 0, 5, reply.rawValue, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(harness.accessLog?["reply"] == "\(reply.rawValue)")
        #expect(harness.accessLog?["end"] == "request_failed")
    }

    @Test func errnoMapsToRFC1928ReplyCodes() {
        #expect(OutboundConnector.code(forErrno: ECONNREFUSED) == .connectionRefused)
        #expect(OutboundConnector.code(forErrno: ENETUNREACH) == .networkUnreachable)
        #expect(OutboundConnector.code(forErrno: ENETDOWN) == .networkUnreachable)
        #expect(OutboundConnector.code(forErrno: EHOSTUNREACH) == .hostUnreachable)
        #expect(OutboundConnector.code(forErrno: EHOSTDOWN) == .hostUnreachable)
        #expect(OutboundConnector.code(forErrno: ETIMEDOUT) == .ttlExpired)
        #expect(OutboundConnector.code(forErrno: EPERM) == .generalFailure)
        #expect(OutboundConnector.failure(for: ChannelError.connectTimeout(.seconds(1))).code == .ttlExpired)
    }

    @Test func deniedDestinationGetsReply2AndTheRuleInTheLog() throws {
        let harness = try SessionHarness()  // the guard keeps loopback out of reach
        try harness.send(SessionHarness.connect(.ipv4(SOCKSIPv4Address(127, 0, 0, 1))))
        #expect(harness.connector.asked.isEmpty)
        #expect(try harness.written() == [5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(harness.accessLog?["end"] == "denied")
        #expect(harness.accessLog?["rule"] == "guard:127.0.0.0/8")
        #expect(harness.accessLog?["reply"] == "2")
    }

    @Test(arguments: [ResolveOutcome.failed("NXDOMAIN"), .timedOut, .overShare, .overloaded])
    func aNameThatCannotBeResolvedGetsReply4(outcome: ResolveOutcome) throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        try harness.send(SessionHarness.connect(.domain("example.com")))
        #expect(harness.resolver.asked.map(\.name) == ["example.com"])
        try #require(harness.resolver.asked.first).promise.succeed(outcome)
        harness.channel.embeddedEventLoop.run()
        #expect(try harness.written() == [5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(harness.accessLog?["reply"] == "4")
    }

    @Test func aResolvedNameIsCheckedAddressByAddress() throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        try harness.send(SessionHarness.connect(.domain("mixed.example")))
        // One address is public, one is behind the guard: only the public one is connected to.
        try #require(harness.resolver.asked.first).promise.succeed(.resolved([IPAddress("10.0.0.1")!, IPAddress("203.0.113.5")!]))
        harness.channel.embeddedEventLoop.run()
        #expect(harness.connector.asked.first?.addresses == [try SocketAddress(ipAddress: "203.0.113.5", port: 80)])
    }

    @Test func unsupportedCommandAndAddressTypeGetReplies7And8() throws {
        let bind = try SessionHarness()
        defer { bind.close() }
        try bind.send([5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80])
        #expect(try bind.written() == [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(bind.accessLog?["cmd"] == "bind")
        let badType = try SessionHarness()
        defer { badType.close() }
        try badType.send([5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80])
        #expect(try badType.written() == [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(badType.accessLog?["reply"] == "8")
    }

    @Test func serverSessionLimitGetsReply1AndPerClientLimitReply2() throws {
        var limits = Limits()
        limits.maxSessions = 1
        let first = try SessionHarness(limits: limits)
        defer { first.close() }
        // The limiter is per server: a second session on the same one.
        _ = first.limiter.acquire(user: nil, client: ClientNetwork(nil as IPAddress?), limits: limits)
        try first.send(SessionHarness.connect(Self.publicIP))
        #expect(try first.written() == [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(first.accessLog?["end"] == "limit_server")
        limits.maxSessions = 0
        limits.sessionsPerClient = 1
        let second = try SessionHarness(limits: limits)
        defer { second.close() }
        _ = second.limiter.acquire(user: nil, client: ClientNetwork(IPAddress("198.51.100.7")), limits: limits)
        try second.send(SessionHarness.connect(Self.publicIP))
        #expect(try second.written() == [5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(second.accessLog?["end"] == "limit_client")
    }

    @Test func wrongPasswordGetsTheRFC1929FailureAndClose() throws {
        let harness = try SessionHarness(methods: [.usernamePassword])
        defer { harness.close() }
        try harness.send([5, 1, 2, 1, 5] + Array("alice".utf8) + [2] + Array("no".utf8))
        try #require(harness.authenticator.asked.first).succeed(.failure(reason: "bad password"))
        harness.channel.embeddedEventLoop.run()
        #expect(try harness.written() == [5, 2, 1, 1])
        #expect(!harness.channel.isActive)
        #expect(harness.accessLog?["end"] == "auth_failed")
        #expect(harness.accessLog?["user"] == "alice")
        #expect(!harness.logs.text.contains("no\""))
    }

    @Test func thePasswordIsWipedFromTheNegotiationBufferOnceRead() throws {
        let harness = try SessionHarness(methods: [.usernamePassword])
        defer { harness.close() }
        let password = Array("correct horse battery".utf8)
        // Greeting, credentials and the start of a request in one segment: the buffer keeps the rest.
        try harness.send([5, 1, 2, 1, 5] + Array("alice".utf8) + [UInt8(password.count)] + password + [5, 1])
        #expect(harness.authenticator.asked.count == 1)
        let leftovers = harness.session.withNegotiationBuffer { buffer in
            buffer.withVeryUnsafeBytes { storage in
                (0...(storage.count - password.count)).filter { start in storage[start..<start + password.count].elementsEqual(password) }
            }
        }
        #expect(leftovers.isEmpty, "the password is still in the session's buffer at \(leftovers)")
        #expect(harness.session.withNegotiationBuffer { $0.readableBytesView.elementsEqual([5, 1]) })
    }

    @Test func clientGoneMidAuthenticationIsNotAnswered() throws {
        let harness = try SessionHarness(methods: [.usernamePassword])
        defer { harness.close() }
        try harness.send([5, 1, 2, 1, 1, 0x61, 1, 0x62])
        _ = try harness.written()
        _ = try? harness.channel.close().wait()
        try #require(harness.authenticator.asked.first).succeed(.success(Identity(user: "a")))
        harness.channel.embeddedEventLoop.run()
        #expect(harness.logs.sessionLines.count == 1)
        #expect(harness.accessLog?["end"] == "client_closed")
    }

    @Test func clientGoneMidLookupDropsTheLookup() throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        try harness.send(SessionHarness.connect(.domain("slow.example")))
        let ticket = try #require(harness.resolver.asked.first?.ticket)
        #expect(!ticket.isCancelled)
        _ = try? harness.channel.close().wait()
        #expect(ticket.isCancelled)
        try #require(harness.resolver.asked.first).promise.succeed(.resolved([IPAddress("203.0.113.5")!]))
        harness.channel.embeddedEventLoop.run()
        #expect(harness.connector.asked.isEmpty)
        #expect(harness.logs.sessionLines.count == 1)
    }

    @Test func clientGoneMidConnectClosesTheTarget() throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        try harness.send(SessionHarness.connect(Self.publicIP))
        _ = try? harness.channel.close().wait()
        let target = EmbeddedChannel(loop: harness.channel.embeddedEventLoop)
        try target.connect(to: SocketAddress(ipAddress: "203.0.113.9", port: 80)).wait()
        try #require(harness.connector.asked.first).promise.succeed(target)
        harness.channel.embeddedEventLoop.run()
        #expect(!target.isActive)
        #expect(harness.accessLog?["end"] == "client_closed")
    }

    @Test func lookupAndConnectShareTimeoutsConnect() throws {
        var timeouts = Timeouts()
        timeouts.connect = .seconds(3)
        let slowLookup = try SessionHarness(timeouts: timeouts)
        defer { slowLookup.close() }
        try slowLookup.send(SessionHarness.connect(.domain("slow.example")))
        slowLookup.channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        #expect(try slowLookup.written() == [5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(try #require(slowLookup.resolver.asked.first).ticket?.isCancelled == true)

        let slowConnect = try SessionHarness(timeouts: timeouts)

        defer { slowConnect.close() }
        try slowConnect.send(SessionHarness.connect(.domain("slow.example")))
        slowConnect.channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        try #require(slowConnect.resolver.asked.first).promise.succeed(.resolved([IPAddress("203.0.113.5")!]))
        slowConnect.channel.embeddedEventLoop.run()
        // The connect gets what is left of the three seconds.
        #expect(slowConnect.connector.asked.first?.timeout == .seconds(2))
        slowConnect.channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(try slowConnect.written() == [5, 0, 5, 6, 0, 1, 0, 0, 0, 0, 0, 0])
    }

    @Test func silentClientIsClosedAtTheNegotiationTimeout() throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        try harness.send([5, 1])
        harness.channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(!harness.channel.isActive)
        #expect(harness.accessLog?["end"] == "negotiation_timeout")
    }

    @Test func udpAssociateForASubjectNoRuleAllowsIsRefusedUpFront() throws {
        let policy = Policy(rules: [EgressRule(action: .allow, commands: [.connect])])
        let harness = try SessionHarness(policy: policy)
        defer { harness.close() }
        try harness.send([5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(try harness.written() == [5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(harness.accessLog?["end"] == "denied")
        #expect(harness.accessLog?["cmd"] == "udp")
    }
}
