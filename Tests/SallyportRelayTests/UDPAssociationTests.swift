import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SOCKSProtocol
import Testing

@testable import SallyportRelay

/// A destination gate that records what it is asked and answers only when the test says so.
final class HeldGate: Sendable {
    let loop: any EventLoop
    private let asked = NIOLockedValueBox<[(endpoint: SOCKSEndpoint, answer: EventLoopPromise<UDPGateAnswer>)]>([])

    init(loop: any EventLoop) { self.loop = loop }

    var endpoints: [SOCKSEndpoint] { asked.withLockedValue { $0.map(\.endpoint) } }

    var gate: UDPDestinationGate {
        { [self] endpoint in
            let promise = loop.makePromise(of: UDPGateAnswer.self)
            asked.withLockedValue { $0.append((endpoint, promise)) }
            return promise.futureResult
        }
    }

    /// Answers the `index`th question, on the loop (so its consequences are done on return).
    func answer(_ index: Int, _ answer: UDPGateAnswer) async throws {
        let promise = try #require(asked.withLockedValue { $0.indices.contains(index) ? $0[index].answer : nil })
        try await loop.submit { promise.succeed(answer) }.get()
    }

    /// Answers every question still open with `.dropped` (a promise left open is a leak).
    func finish() async throws {
        let all = asked.withLockedValue { $0.map(\.answer) }
        try await loop.submit { for promise in all { promise.succeed(.dropped) } }.get()
    }
}

/// One association on a real loopback socket; the client's datagrams are handed to it as its
/// socket would, on its event loop, so every bound is checked without timing.
struct AssociationHarness {
    let loop: any EventLoop
    let association: NIOLoopBound<UDPAssociation>
    let gate: HeldGate
    static let client = try! SocketAddress(ipAddress: "127.0.0.1", port: 40_000)

    init(_ configuration: UDPRelayConfiguration) async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let gate = HeldGate(loop: loop)
        self.loop = loop
        self.gate = gate
        // Started on its loop, as a session starts it.
        association = try await loop.flatSubmit {
            UDPAssociation.start(
                on: loop, bindHost: "127.0.0.1", ports: nil, client: Self.client, expectedPort: nil,
                configuration: configuration, gate: gate.gate, onEnd: { _, _ in }
            ).map { NIOLoopBound($0, eventLoop: loop) }
        }.get()
    }

    /// With a quota allowance: `quotaLeft` bytes in the ledger, leased `lease` at a time (the
    /// allowance is made on the association's loop, where it lives).
    init(quotaLeft: Int, lease: Int) async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let gate = HeldGate(loop: loop)
        self.loop = loop
        self.gate = gate
        association = try await loop.flatSubmit {
            var left = quotaLeft
            let allowance = ByteAllowance(lease: lease) {
                let granted = min(left, lease)
                left -= granted
                return granted
            }
            return UDPAssociation.start(
                on: loop, bindHost: "127.0.0.1", ports: nil, client: Self.client, expectedPort: nil,
                configuration: UDPRelayConfiguration(idleTimeout: nil), allowance: allowance, gate: gate.gate, onEnd: { _, _ in }
            ).map { NIOLoopBound($0, eventLoop: loop) }
        }.get()
    }

    /// A datagram of `size` payload bytes from the client to `destination`.
    func send(to destination: SOCKSEndpoint, size: Int = 100) async throws {
        let association = self.association
        try await loop.submit {
            var packet = ByteBuffer()
            packet.writeUDPDatagramHeader(UDPDatagramHeader(endpoint: destination))
            packet.writeRepeatingByte(7, count: size)
            association.value.fromClient(AddressedEnvelope(remoteAddress: Self.client, data: packet))
        }.get()
    }

    var counters: UDPCounters {
        get async throws {
            let association = self.association
            return try await loop.submit { association.value.countersSoFar }.get()
        }
    }

    /// Waits (bounded) until the counters satisfy `condition`: sockets open asynchronously.
    func waitForCounters(_ condition: (UDPCounters) -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if condition(try await counters) { return true }
            try await Task.sleep(for: .milliseconds(5))
        }
        return condition(try await counters)
    }

    func close() async throws {
        try await gate.finish()
        let association = self.association
        try await loop.submit { association.value.close(.closedByServer) }.get()
    }
}

/// The bounds on what one UDP association keeps: destinations being checked (count and bytes),
/// refused destinations remembered, open destination sockets.
@Suite(.timeLimit(.minutes(1))) struct UDPAssociationTests {
    static func destination(_ index: Int) -> SOCKSEndpoint {
        SOCKSEndpoint(host: .ipv4(SOCKSIPv4Address(192, 0, 2, UInt8(index))), port: 53)
    }

    @Test func destinationsBeingCheckedAreBoundedInCountAndBytes() async throws {
        let harness = try await AssociationHarness(
            UDPRelayConfiguration(idleTimeout: nil, maxPendingDestinations: 3, maxPendingBytes: 1000))
        // Five new destinations: three are checked, two dropped for want of room.
        for index in 1...5 { try await harness.send(to: Self.destination(index)) }
        #expect(harness.gate.endpoints == (1...3).map(Self.destination))
        var counters = try await harness.counters
        #expect(counters.destinations == 3 && counters.droppedNoRoom == 2)
        // 300 bytes wait; 700 more fit for a destination being checked, the next 100 do not.
        for _ in 0..<8 { try await harness.send(to: Self.destination(1)) }
        counters = try await harness.counters
        #expect(counters.droppedNoRoom == 3, "\(counters)")
        // Once the checks are answered (dropped), what waited is counted and the room is free.
        for index in 0..<3 { try await harness.gate.answer(index, .dropped) }
        counters = try await harness.counters
        #expect(counters.droppedDenied == 10, "\(counters)")
        try await harness.send(to: Self.destination(4))
        #expect(harness.gate.endpoints.count == 4)
        try await harness.close()
    }

    /// A user's quota in an association: datagrams are taken whole from the allowance, and those
    /// it has no room for are dropped and counted, not sent.
    @Test func datagramsPastTheQuotaAllowanceAreDroppedWhole() async throws {
        let harness = try await AssociationHarness(quotaLeft: 250, lease: 100)
        for _ in 0..<5 { try await harness.send(to: Self.destination(1), size: 100) }
        let counters = try await harness.counters
        #expect(counters.droppedOverQuota == 3, "\(counters)")
        #expect(harness.gate.endpoints.count == 1)
        try await harness.close()
    }

    @Test func refusedDestinationsAreRememberedUpToRefusedMemory() async throws {
        let harness = try await AssociationHarness(UDPRelayConfiguration(idleTimeout: nil, refusedMemory: 2))
        for index in 1...3 {
            try await harness.send(to: Self.destination(index))
            try await harness.gate.answer(index - 1, .refused)
        }
        // The last two refused are dropped without asking again...
        try await harness.send(to: Self.destination(3))
        try await harness.send(to: Self.destination(2))
        #expect(harness.gate.endpoints.count == 3)
        #expect(try await harness.counters.droppedDenied == 5)
        // ...the first was forgotten when the third came, and is asked about again.
        try await harness.send(to: Self.destination(1))
        #expect(harness.gate.endpoints.count == 4)
        #expect(harness.gate.endpoints.last == Self.destination(1))
        try await harness.close()
    }

    @Test func openDestinationSocketsAreBoundedTheLeastRecentlyUsedClosing() async throws {
        // A sink for what the association sends: a socket that only reads.
        let sink = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let target = try #require(sink.localAddress)
        let harness = try await AssociationHarness(UDPRelayConfiguration(idleTimeout: nil, maxDestinations: 2))
        for index in 1...3 {
            try await harness.send(to: Self.destination(index))
            try await harness.gate.answer(index - 1, .send(target, nil))
            #expect(try await harness.waitForCounters { $0.datagramsUp == index }, "destination \(index) opened")
        }
        // The third socket closed the first: a datagram to it is checked again; the third's is not.
        try await harness.send(to: Self.destination(3))
        #expect(try await harness.waitForCounters { $0.datagramsUp == 4 })
        #expect(harness.gate.endpoints.count == 3)
        try await harness.send(to: Self.destination(1))
        #expect(harness.gate.endpoints.count == 4)
        try await harness.close()
        try await sink.close()
    }
}
