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
    /// Destinations being checked (looked up) at once; datagrams to further new ones are dropped.
    public var maxPendingDestinations: Int
    /// Bytes held for destinations being checked, all of them together.
    public var maxPendingBytes: Int
    /// Refused destinations remembered (their datagrams are dropped without asking again).
    public var refusedMemory: Int

    public init(
        idleTimeout: TimeAmount?, clientToTargetLimit: RateLimiter? = nil, targetToClientLimit: RateLimiter? = nil,
        maxDestinations: Int = 256, maxPendingDestinations: Int = 32, maxPendingBytes: Int = 256 * 1024, refusedMemory: Int = 256
    ) {
        self.idleTimeout = idleTimeout
        self.clientToTargetLimit = clientToTargetLimit
        self.targetToClientLimit = targetToClientLimit
        self.maxDestinations = maxDestinations
        self.maxPendingDestinations = maxPendingDestinations
        self.maxPendingBytes = maxPendingBytes
        self.refusedMemory = refusedMemory
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
    /// Dropped: the user's quota is used up.
    public var droppedOverQuota = 0
    /// Datagrams that found no room: too many destinations or bytes waiting for their check, or a
    /// socket that could not take another write.
    public var droppedNoRoom = 0
    /// Distinct destinations the client sent to (a destination forgotten and used again counts again).
    public var destinations = 0

    public init() {}

    public var dropped: Int { droppedForeign + droppedMalformed + droppedFragments + droppedDenied + droppedOverLimit + droppedOverQuota + droppedNoRoom }
}

/// Why an association ended.
public enum UDPRelayEnd: String, Sendable {
    /// The TCP connection that asked for it closed.
    case controlClosed = "control_closed"
    case idleTimeout = "idle_timeout"
    case closedByServer = "closed_by_server"
}

/// The gate's answer for a destination.
public enum UDPGateAnswer: Sendable {
    /// Send to this address, from the source address and interface of `binding` if given.
    case send(SocketAddress, OutboundBinding?)
    /// Refused: datagrams to it are dropped, and it is remembered as refused.
    case refused
    /// Not now (the lookup was refused or timed out): this datagram is dropped, the next one asks again.
    case dropped
}

/// Decides where a datagram may go. Called once per new destination of an association, on its
/// event loop.
public typealias UDPDestinationGate = (SOCKSEndpoint) -> EventLoopFuture<UDPGateAnswer>

/// One UDP ASSOCIATE: the client-facing socket, one connected socket per destination, and the
/// rules between them. Lives on the event loop of its control connection.
///
/// Datagrams are taken only from the control connection's peer IP, and from one port of it: the
/// port the client named in its request, or else the port of the first datagram that arrives.
/// Anything else is dropped and counted, so nobody else can use or take over the association.
///
/// Everything it keeps is bounded, whatever the client sends: open destination sockets (LRU),
/// destinations being checked and the bytes held for them, refused destinations remembered (LRU),
/// and writes (a socket that cannot take one more drops the datagram rather than queue it).
public final class UDPAssociation {
    public let boundAddress: SocketAddress
    private let eventLoop: any EventLoop
    private let configuration: UDPRelayConfiguration
    /// The bytes a user with a quota may still move; datagrams past it are dropped.
    private let allowance: ByteAllowance?
    private let gate: UDPDestinationGate
    /// The client's IP, compared with every datagram's source.
    private let clientIP: IPAddress?
    private var clientPort: Int?
    /// The client's address once its port is known: where replies go.
    private var clientAddress: SocketAddress?
    /// Destination sockets written to since the last flush; flushed once per read burst.
    private var unflushed: [any Channel] = []
    private var clientChannel: (any Channel)?
    private let allocator: ByteBufferAllocator
    private var ready: LRUTable<SOCKSEndpoint, any Channel>
    private var pending: [SOCKSEndpoint: [ByteBuffer]] = [:]
    private var pendingBytes = 0
    private var refused: LRUTable<SOCKSEndpoint, Void>
    private var counters = UDPCounters()
    /// Datagrams and bytes so far. Read on the association's event loop.
    public var countersSoFar: UDPCounters { counters }
    private var onEnd: ((UDPCounters, UDPRelayEnd) -> Void)?
    private var idleWatch: IdleWatch?
    private var ended = false

    /// Opens the client-facing socket at `bindAddress` (port 0 picks one; `ports` tries a range).
    ///
    /// - Parameters:
    ///   - client: the control connection's peer; only its IP may send.
    ///   - expectedPort: the port the client said it will send from, if it named one.
    ///   - onEnd: called once, on the event loop, when the association is over.
    public static func start(
        on eventLoop: any EventLoop, bindHost: String, ports: ClosedRange<Int>?, client: SocketAddress, expectedPort: Int?,
        configuration: UDPRelayConfiguration, allowance: ByteAllowance? = nil, gate: @escaping UDPDestinationGate,
        onEnd: @escaping (UDPCounters, UDPRelayEnd) -> Void
    ) -> EventLoopFuture<UDPAssociation> {
        let handlerBox = NIOLoopBound(UDPClientHandler(), eventLoop: eventLoop)
        return bindFirst(of: bindCandidates(ports), host: bindHost, on: eventLoop, handler: handlerBox).assumeIsolated().map { channel in
            let association = UDPAssociation(
                channel: channel, eventLoop: eventLoop, configuration: configuration, allowance: allowance, gate: gate,
                client: client, clientPort: expectedPort, onEnd: onEnd)
            handlerBox.value.association = association
            association.idleWatch?.start()
            return association
        }.nonisolated()
    }

    private init(
        channel: any Channel, eventLoop: any EventLoop, configuration: UDPRelayConfiguration, allowance: ByteAllowance?,
        gate: @escaping UDPDestinationGate, client: SocketAddress, clientPort: Int?, onEnd: @escaping (UDPCounters, UDPRelayEnd) -> Void
    ) {
        self.boundAddress = channel.localAddress!
        self.clientChannel = channel
        self.allocator = channel.allocator
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.allowance = allowance
        self.gate = gate
        self.clientIP = IPAddress(client)?.unmapped
        self.clientPort = clientPort
        if let clientPort { self.clientAddress = client.withPort(clientPort) }
        self.ready = LRUTable(capacity: configuration.maxDestinations)
        self.refused = LRUTable(capacity: configuration.refusedMemory)
        self.onEnd = onEnd
        idleWatch = IdleWatch(
            timeout: configuration.idleTimeout, eventLoop: eventLoop,
            activity: { [unowned self] in UInt64(counters.datagramsUp &+ counters.datagramsDown) },
            onIdle: { [unowned self] in close(.idleTimeout) })
    }

    /// Ends the association: closes every socket and reports. Call on its event loop.
    public func close(_ reason: UDPRelayEnd) {
        guard !ended else { return }
        ended = true
        idleWatch?.stop()
        idleWatch = nil
        clientChannel?.close(promise: nil)
        clientChannel = nil
        for channel in ready.values { channel.close(promise: nil) }
        ready.removeAll()
        refused.removeAll()
        pending.removeAll()
        pendingBytes = 0
        let callback = onEnd
        onEnd = nil
        callback?(counters, reason)
    }

    // MARK: Client → destination

    func fromClient(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard !ended else { return }
        let source = envelope.remoteAddress
        guard let port = source.port, IPAddress(source)?.unmapped == clientIP, clientPort == nil || clientPort == port else {
            counters.droppedForeign += 1
            return
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
        send(&data, to: header.endpoint)
    }

    private func send(_ data: inout ByteBuffer, to endpoint: SOCKSEndpoint) {
        if let channel = ready.use(endpoint) {
            guard Self.hasRoom(channel) else {
                counters.droppedNoRoom += 1
                return
            }
            guard charge(data.readableBytes) else { return }
            write(copy(&data), on: channel)
            return
        }
        if refused.peek(endpoint) != nil {
            counters.droppedDenied += 1
            return
        }
        if var queue = pending[endpoint] {
            guard queue.count < Self.datagramsPerPendingDestination, pendingBytes + data.readableBytes <= configuration.maxPendingBytes else {
                counters.droppedNoRoom += 1
                return
            }
            guard charge(data.readableBytes) else { return }
            pendingBytes += data.readableBytes
            pending[endpoint] = nil  // keeps the array uniquely referenced while it grows
            queue.append(copy(&data))
            pending[endpoint] = queue
            return
        }
        guard pending.count < configuration.maxPendingDestinations, pendingBytes + data.readableBytes <= configuration.maxPendingBytes else {
            counters.droppedNoRoom += 1
            return
        }
        guard charge(data.readableBytes) else { return }
        counters.destinations += 1
        pendingBytes += data.readableBytes
        pending[endpoint] = [copy(&data)]
        open(endpoint)
    }

    /// Datagrams kept per destination while its address is being checked.
    static let datagramsPerPendingDestination = 32

    /// Takes the datagram's bytes from the upload bucket; false (dropped, nothing taken) when over the limit.
    private func charge(_ bytes: Int) -> Bool {
        if let allowance = allowance, !allowance.admits(bytes) {
            counters.droppedOverQuota += 1
            return false
        }
        if let limiter = configuration.clientToTargetLimit, !limiter.take(bytes) {
            counters.droppedOverLimit += 1
            return false
        }
        allowance?.spend(bytes)
        return true
    }

    /// A copy of its own: the read buffer goes back to the channel's pool at once (see
    /// `datagramBootstrap`), where holding it until the flush would make NIO allocate another.
    private func copy(_ data: inout ByteBuffer) -> ByteBuffer {
        var payload = allocator.buffer(capacity: data.readableBytes)
        payload.writeBuffer(&data)
        return payload
    }

    private func write(_ data: ByteBuffer, on channel: any Channel) {
        guard Self.hasRoom(channel) else {
            counters.droppedNoRoom += 1
            return
        }
        counters.datagramsUp += 1
        counters.bytesUp += UInt64(data.readableBytes)
        channel.write(data, promise: nil)
        if !unflushed.contains(where: { $0 === channel }) { unflushed.append(channel) }
    }

    /// Whether a socket can take another datagram: past its write-buffer mark (64 KiB) the writes
    /// of this burst are pushed to the kernel first, and only a socket whose kernel buffer is full
    /// too has no room. What waits in NIO per socket stays under the mark.
    private static func hasRoom(_ channel: any Channel) -> Bool {
        if channel.isWritable { return true }
        channel.flush()
        return channel.isWritable
    }

    /// The end of a read burst from the client: one flush per destination written to.
    func flushDestinations() {
        for channel in unflushed { channel.flush() }
        unflushed.removeAll(keepingCapacity: true)
    }

    /// The end of a read burst from a destination.
    func flushClient() {
        clientChannel?.flush()
    }

    /// Asks the gate, then opens a socket connected to the destination's address.
    private func open(_ endpoint: SOCKSEndpoint) {
        let eventLoop = self.eventLoop
        gate(endpoint).hop(to: eventLoop).assumeIsolated().flatMap { answer -> EventLoopFuture<(any Channel)?> in
            guard case .send(let address, let binding) = answer else {
                if case .refused = answer, !self.ended { self.refused.set(endpoint, ()) }
                return eventLoop.makeSucceededFuture(nil)
            }
            let handler = NIOLoopBound(UDPTargetHandler(association: self), eventLoop: eventLoop)
            // Kept to close it if its bind fails (NIO leaves such a channel open, see `bindFirst`).
            let attempt = NIOLoopBoundBox<(any Channel)?>(nil, eventLoop: eventLoop)
            let bootstrap = Self.datagramBootstrap(on: eventLoop) { channel in
                attempt.value = channel
                let added = channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler.value) }
                guard let binding else { return added }
                return added.flatMap { binding.bindInterface(channel) }
            }
            // A source address: bound first (a datagram channel binds once registered), then connected.
            let opened = binding?.sourceAddress.map { source in
                bootstrap.bind(to: source).flatMap { channel in channel.connect(to: address).map { channel } }
            } ?? bootstrap.connect(to: address)
            return opened.map { Optional($0) }.flatMapErrorThrowing { error in
                attempt.value?.close(promise: nil)
                throw error
            }
        }
        .whenComplete { [self] result in
            let queued = pending.removeValue(forKey: endpoint) ?? []
            pendingBytes -= queued.reduce(0) { $0 + $1.readableBytes }
            switch result {
            case .success(let channel?) where !ended:
                if let (_, evicted) = ready.set(endpoint, channel) { evicted.close(promise: nil) }
                for data in queued { write(data, on: channel) }
                flushDestinations()
            case .success(let channel):
                channel?.close(promise: nil)
                counters.droppedDenied += queued.count
            case .failure:
                counters.droppedDenied += queued.count
            }
        }
    }

    // MARK: Destination → client

    func fromTarget(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard !ended, let clientChannel, let client = clientAddress else { return }
        var data = envelope.data
        guard Self.hasRoom(clientChannel) else {
            counters.droppedNoRoom += 1
            return
        }
        if let allowance = allowance, !allowance.admits(data.readableBytes) {
            counters.droppedOverQuota += 1
            return
        }
        if let limiter = configuration.targetToClientLimit, !limiter.take(data.readableBytes) {
            counters.droppedOverLimit += 1
            return
        }
        allowance?.spend(data.readableBytes)
        counters.datagramsDown += 1
        counters.bytesDown += UInt64(data.readableBytes)
        var packet = clientChannel.allocator.buffer(capacity: data.readableBytes + 22)
        packet.writeUDPDatagramHeader(UDPDatagramHeader(endpoint: SOCKSEndpoint(envelope.remoteAddress)))
        packet.writeBuffer(&data)
        clientChannel.write(AddressedEnvelope(remoteAddress: client, data: packet), promise: nil)
    }
}
