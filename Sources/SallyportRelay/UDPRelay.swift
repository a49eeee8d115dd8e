import NIOCore
import NIOPosix
import SOCKSProtocol

/// Settings of a UDP association.
public struct UDPRelayConfiguration: Sendable {
    /// End the association when no datagram has moved either way for this long; nil never.
    public var idleTimeout: TimeAmount?
    /// Polices client→destination bytes (datagrams over the rate are dropped); nil for no limit.
    public var clientToTargetLimit: RateLimiter?
    /// Polices destination→client bytes.
    public var targetToClientLimit: RateLimiter?
    /// Destinations with an open socket at once; the least recently used is closed past it.
    public var maxDestinations: Int

    public init(idleTimeout: TimeAmount?, clientToTargetLimit: RateLimiter? = nil, targetToClientLimit: RateLimiter? = nil, maxDestinations: Int = 256) {
        self.idleTimeout = idleTimeout
        self.clientToTargetLimit = clientToTargetLimit
        self.targetToClientLimit = targetToClientLimit
        self.maxDestinations = maxDestinations
    }
}

/// What a UDP association moved and dropped.
public struct UDPCounters: Sendable, Hashable {
    public var datagramsUp = 0
    public var datagramsDown = 0
    public var bytesUp: UInt64 = 0
    public var bytesDown: UInt64 = 0
    /// Datagrams from an address other than the client's.
    public var droppedForeign = 0
    /// Datagrams whose header could not be read.
    public var droppedMalformed = 0
    /// Datagrams with FRAG ≠ 0 (fragmentation is not supported).
    public var droppedFragments = 0
    /// Datagrams to destinations the policy refused, or that could not be resolved.
    public var droppedDenied = 0
    /// Datagrams over the bandwidth limit.
    public var droppedOverLimit = 0
    /// Distinct destinations the client sent to.
    public var destinations = 0

    public init() {}

    public var dropped: Int { droppedForeign + droppedMalformed + droppedFragments + droppedDenied + droppedOverLimit }
}

/// Why an association ended.
public enum UDPRelayEnd: String, Sendable {
    /// The TCP connection that asked for it closed.
    case controlClosed = "control_closed"
    case idleTimeout = "idle_timeout"
    case closedByServer = "closed_by_server"
    case error = "udp_error"
}

/// Decides where a datagram may go: the socket address to send to, or nil when the destination is
/// refused (or cannot be resolved). Called once per destination of an association, on its event loop.
public typealias UDPDestinationGate = @Sendable (SOCKSEndpoint) -> EventLoopFuture<SocketAddress?>

/// One UDP ASSOCIATE: the client-facing socket, one connected socket per destination, and the
/// rules between them. Lives on the event loop of its control connection.
///
/// Datagrams are taken only from the control connection's peer IP, and from one port of it: the
/// port the client named in its request, or else the port of the first datagram that arrives.
/// Anything else is dropped and counted, so nobody else can use or take over the association.
public final class UDPAssociation {
    public let boundAddress: SocketAddress
    private let eventLoop: any EventLoop
    private let configuration: UDPRelayConfiguration
    private let gate: UDPDestinationGate
    /// The client's IP, as raw bytes: compared with every datagram's source without making strings.
    private let clientHost: HostKey
    private var clientPort: Int?
    /// The client's address once its port is known: where replies go.
    private var clientAddress: SocketAddress?
    /// Destination sockets written to since the last flush; flushed once per read burst.
    private var unflushed: [any Channel] = []
    private var clientChannel: (any Channel)?
    private let allocator: ByteBufferAllocator
    private var destinations: [SOCKSEndpoint: Destination] = [:]
    private var useClock: UInt64 = 0
    private var counters = UDPCounters()
    private var onEnd: ((UDPCounters, UDPRelayEnd) -> Void)?
    private var idleWatch: IdleWatch?
    private var ended = false

    /// Datagrams kept per destination while its address is being checked.
    private static let pendingLimit = 32

    private enum Destination {
        case pending([ByteBuffer])
        case ready(any Channel, lastUse: UInt64)
        case refused
    }

    /// Opens the client-facing socket at `bindAddress` (port 0 picks one; `ports` tries a range).
    ///
    /// - Parameters:
    ///   - client: the control connection's peer; only its IP may send.
    ///   - expectedPort: the port the client said it will send from, if it named one.
    ///   - onEnd: called once, on the event loop, when the association is over.
    public static func start(
        on eventLoop: any EventLoop, bindHost: String, ports: ClosedRange<Int>?, client: SocketAddress, expectedPort: Int?,
        configuration: UDPRelayConfiguration, gate: @escaping UDPDestinationGate,
        onEnd: @escaping (UDPCounters, UDPRelayEnd) -> Void
    ) -> EventLoopFuture<UDPAssociation> {
        let handlerBox = NIOLoopBound(UDPClientHandler(), eventLoop: eventLoop)
        return bindFirst(of: bindCandidates(ports), host: bindHost, on: eventLoop, handler: handlerBox).assumeIsolated().map { channel in
            let association = UDPAssociation(
                channel: channel, eventLoop: eventLoop, configuration: configuration, gate: gate,
                client: client, clientPort: expectedPort, onEnd: onEnd)
            handlerBox.value.association = association
            association.idleWatch?.start()
            return association
        }.nonisolated()
    }

    /// Binds attempted per association when a port range is configured: a range that busy is
    /// exhausted in practice, and each attempt costs a socket on the event loop.
    static let maxBindAttempts = 64

    /// The ports to try, in order: 0 (any free port) without a range; a small range whole, from
    /// a random start; a large one at `maxBindAttempts` random ports.
    static func bindCandidates(_ ports: ClosedRange<Int>?) -> [Int] {
        guard let ports else { return [0] }
        if ports.count <= maxBindAttempts {
            let offset = Int.random(in: 0..<ports.count)
            return (0..<ports.count).map { ports.lowerBound + ($0 + offset) % ports.count }
        }
        return (0..<maxBindAttempts).map { _ in Int.random(in: ports) }
    }

    private static func bindFirst(
        of ports: [Int], at index: Int = 0, host: String, on eventLoop: any EventLoop, handler: NIOLoopBound<UDPClientHandler>
    ) -> EventLoopFuture<any Channel> {
        guard index < ports.count else {
            return eventLoop.makeFailedFuture(UDPRelayError.noFreePort)
        }
        return datagramBootstrap(on: eventLoop) { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler.value) }
        }
        .bind(host: host, port: ports[index])
        .flatMapError { error in
            index + 1 < ports.count
                ? bindFirst(of: ports, at: index + 1, host: host, on: eventLoop, handler: handler)
                : eventLoop.makeFailedFuture(error)
        }
    }

    /// Datagrams read per readiness event: a burst is relayed with one wake-up and, per socket
    /// written to, one `sendmmsg`.
    static let datagramsPerWakeUp: UInt = 16

    static func datagramBootstrap(on eventLoop: any EventLoop, _ initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>) -> DatagramBootstrap {
        DatagramBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
                    // NIO's datagram default is 2 KiB; a datagram may be up to 64 KiB. NIO's pool
                    // keeps one such buffer per read in a row that is still referenced at the next
                    // read; the relay copies every datagram out, so each socket keeps just one.
                    try options.setOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
                    try options.setOption(.maxMessagesPerRead, value: datagramsPerWakeUp)
                }
                .flatMap { initializer(channel) }
            }
    }

    private init(
        channel: any Channel, eventLoop: any EventLoop, configuration: UDPRelayConfiguration, gate: @escaping UDPDestinationGate,
        client: SocketAddress, clientPort: Int?, onEnd: @escaping (UDPCounters, UDPRelayEnd) -> Void
    ) {
        self.boundAddress = channel.localAddress!
        self.clientChannel = channel
        self.allocator = channel.allocator
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.gate = gate
        self.clientHost = HostKey(client)
        self.clientPort = clientPort
        if let clientPort { self.clientAddress = Self.address(client, port: clientPort) }
        self.onEnd = onEnd
        idleWatch = IdleWatch(
            timeout: configuration.idleTimeout, eventLoop: eventLoop,
            activity: { [unowned self] in UInt64(counters.datagramsUp &+ counters.datagramsDown) },
            onIdle: { [unowned self] in close(.idleTimeout) })
    }

    /// The counters so far.
    public var currentCounters: UDPCounters { counters }

    /// Ends the association: closes every socket and reports. Call on its event loop.
    public func close(_ reason: UDPRelayEnd) {
        guard !ended else { return }
        ended = true
        idleWatch?.stop()
        idleWatch = nil
        clientChannel?.close(promise: nil)
        clientChannel = nil
        for case .ready(let channel, _) in destinations.values { channel.close(promise: nil) }
        destinations.removeAll()
        let callback = onEnd
        onEnd = nil
        callback?(counters, reason)
    }

    // MARK: Client → destination

    fileprivate func fromClient(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard !ended else { return }
        let source = envelope.remoteAddress
        guard HostKey(source) == clientHost, let port = source.port else {
            counters.droppedForeign += 1
            return
        }
        if let clientPort {
            guard clientPort == port else {
                counters.droppedForeign += 1
                return
            }
        }
        var data = envelope.data
        let header: UDPDatagramHeader
        do {
            header = try data.readUDPDatagramHeader()
        } catch {
            counters.droppedMalformed += 1
            return
        }
        guard header.fragment == 0 else {
            counters.droppedFragments += 1
            return
        }
        // The first well-formed datagram from the client's IP fixes its port.
        if clientPort == nil {
            clientPort = port
            clientAddress = source
        }
        if let limiter = configuration.clientToTargetLimit, limiter.consume(data.readableBytes) > .zero {
            counters.droppedOverLimit += 1
            return
        }
        // A copy of its own: the read buffer goes back to the channel's pool at once (see
        // `datagramBootstrap`), where holding it until the flush would make NIO allocate another.
        var payload = allocator.buffer(capacity: data.readableBytes)
        payload.writeBuffer(&data)
        send(payload, to: header.endpoint)
    }

    private func send(_ data: ByteBuffer, to endpoint: SOCKSEndpoint) {
        switch destinations[endpoint] {
        case .ready(let channel, _):
            useClock += 1
            destinations[endpoint] = .ready(channel, lastUse: useClock)
            write(data, on: channel)
        case .pending(var queue):
            if queue.count < Self.pendingLimit {
                queue.append(data)
                destinations[endpoint] = .pending(queue)
            } else {
                counters.droppedDenied += 1
            }
        case .refused:
            counters.droppedDenied += 1
        case nil:
            counters.destinations += 1
            destinations[endpoint] = .pending([data])
            open(endpoint)
        }
    }

    private func write(_ data: ByteBuffer, on channel: any Channel) {
        counters.datagramsUp += 1
        counters.bytesUp += UInt64(data.readableBytes)
        channel.write(data, promise: nil)
        if !unflushed.contains(where: { $0 === channel }) { unflushed.append(channel) }
    }

    /// The end of a read burst from the client: one flush per destination written to.
    fileprivate func flushDestinations() {
        for channel in unflushed { channel.flush() }
        unflushed.removeAll(keepingCapacity: true)
    }

    /// The end of a read burst from a destination.
    fileprivate func flushClient() {
        clientChannel?.flush()
    }

    /// Asks the gate, then opens a socket connected to the destination's address.
    private func open(_ endpoint: SOCKSEndpoint) {
        let eventLoop = self.eventLoop
        gate(endpoint).hop(to: eventLoop).assumeIsolated().flatMap { address -> EventLoopFuture<(any Channel)?> in
            guard let address else { return eventLoop.makeSucceededFuture(nil) }
            let handler = NIOLoopBound(UDPTargetHandler(association: self, endpoint: endpoint), eventLoop: eventLoop)
            return Self.datagramBootstrap(on: eventLoop) { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler.value) }
            }
            .connect(to: address)
            .map { Optional($0) }
        }
        .whenComplete { [self] result in
            let queued: [ByteBuffer]
            if case .pending(let queue) = destinations[endpoint] { queued = queue } else { queued = [] }
            switch result {
            case .success(let channel?) where !ended:
                evictIfNeeded()
                useClock += 1
                destinations[endpoint] = .ready(channel, lastUse: useClock)
                for data in queued { write(data, on: channel) }
                flushDestinations()
            case .success(let channel):
                channel?.close(promise: nil)
                guard !ended else { return }
                destinations[endpoint] = .refused
                counters.droppedDenied += queued.count
            case .failure:
                guard !ended else { return }
                destinations[endpoint] = .refused
                counters.droppedDenied += queued.count
            }
        }
    }

    private func evictIfNeeded() {
        var open = destinations.compactMap { key, value -> (SOCKSEndpoint, UInt64, any Channel)? in
            if case .ready(let channel, let lastUse) = value { return (key, lastUse, channel) }
            return nil
        }
        guard open.count >= configuration.maxDestinations else { return }
        open.sort { $0.1 < $1.1 }
        for (key, _, channel) in open.prefix(open.count - configuration.maxDestinations + 1) {
            channel.close(promise: nil)
            destinations[key] = nil
        }
    }

    // MARK: Destination → client

    fileprivate func fromTarget(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard !ended, let clientChannel, let client = clientAddress else { return }
        var data = envelope.data
        if let limiter = configuration.targetToClientLimit, limiter.consume(data.readableBytes) > .zero {
            counters.droppedOverLimit += 1
            return
        }
        counters.datagramsDown += 1
        counters.bytesDown += UInt64(data.readableBytes)
        var packet = clientChannel.allocator.buffer(capacity: data.readableBytes + 22)
        packet.writeUDPDatagramHeader(UDPDatagramHeader(endpoint: SOCKSEndpoint(envelope.remoteAddress)))
        packet.writeBuffer(&data)
        clientChannel.write(AddressedEnvelope(remoteAddress: client, data: packet), promise: nil)
    }

    static func address(_ host: SocketAddress, port: Int) -> SocketAddress {
        var address = host
        address.port = port
        return address
    }
}

/// An IP address as raw bytes, for comparing datagram sources cheaply.
struct HostKey: Equatable {
    var high: UInt64
    var low: UInt64

    init(_ address: SocketAddress) {
        switch address {
        case .v4(let v4):
            // As its IPv4-mapped IPv6 form, so that both families compare alike.
            high = 0
            low = 0xFFFF_0000_0000 | UInt64(UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case .v6(let v6):
            (high, low) = withUnsafeBytes(of: v6.address.sin6_addr) { raw in
                (UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                 UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
            }
        default:
            high = .max
            low = .max
        }
    }
}

/// Why an association could not be opened.
public enum UDPRelayError: Error {
    case noFreePort
}

/// Reads the client-facing socket.
final class UDPClientHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    var association: UDPAssociation?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        association?.fromClient(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        association?.flushDestinations()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP errors and the like concern one datagram, not the association.
    }
}

/// Reads one destination's connected socket.
final class UDPTargetHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private weak var association: UDPAssociation?
    let endpoint: SOCKSEndpoint

    init(association: UDPAssociation, endpoint: SOCKSEndpoint) {
        self.association = association
        self.endpoint = endpoint
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        association?.fromTarget(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        association?.flushClient()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A refused or unreachable destination (ICMP) answers nothing; the client will time out.
    }
}

extension SOCKSEndpoint {
    /// The endpoint of a socket address, as an IP (never a name).
    public init(_ address: SocketAddress) {
        let port = UInt16(clamping: address.port ?? 0)
        switch address {
        case .v4(let v4):
            self.init(host: .ipv4(SOCKSIPv4Address(UInt32(bigEndian: v4.address.sin_addr.s_addr))), port: port)
        case .v6(let v6):
            self.init(host: .ipv6(SOCKSIPv6Address(bytes: withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) })), port: port)
        default:
            self = .unspecified
        }
    }
}
