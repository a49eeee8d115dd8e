import NIOCore

/// How a relayed session ended: the first thing that started its end.
public enum RelayEnd: String, Sendable {
    /// The client sent EOF first (the other direction was then allowed to finish).
    case clientClosed = "client_closed"
    /// The target sent EOF first.
    case targetClosed = "target_closed"
    /// The client connection failed (reset, write error).
    case clientError = "client_error"
    /// The target connection failed (reset, write error).
    case targetError = "target_error"
    /// No byte moved either way for the idle timeout.
    case idleTimeout = "idle_timeout"
    /// The server closed it (shutdown after the grace period).
    case closedByServer = "closed_by_server"
}

/// Byte counts of one relayed session.
public struct RelayCounters: Sendable, Hashable {
    /// Bytes read from the client and written towards the target.
    public var clientToTarget: UInt64 = 0
    /// Bytes read from the target and written towards the client.
    public var targetToClient: UInt64 = 0

    public init(clientToTarget: UInt64 = 0, targetToClient: UInt64 = 0) {
        self.clientToTarget = clientToTarget
        self.targetToClient = targetToClient
    }
}

/// What the relay reports once both connections are closed.
public struct RelayOutcome: Sendable {
    public var counters: RelayCounters
    public var end: RelayEnd
}

/// Settings of the relay.
public struct RelayConfiguration: Sendable {
    /// Close the session when no byte has moved either way for this long; nil never does.
    public var idleTimeout: TimeAmount?
    /// Shapes client→target bytes (shared with the user's other sessions); nil for no limit.
    public var clientToTargetLimit: RateLimiter?
    /// Shapes target→client bytes; nil for no limit.
    public var targetToClientLimit: RateLimiter?

    public init(idleTimeout: TimeAmount?, clientToTargetLimit: RateLimiter? = nil, targetToClientLimit: RateLimiter? = nil) {
        self.idleTimeout = idleTimeout
        self.clientToTargetLimit = clientToTargetLimit
        self.targetToClientLimit = targetToClientLimit
    }
}

/// The one bidirectional TCP relay every session goes through.
///
/// Two handlers, one on each channel, hand each other what they read (the shape of swift-nio-ssh's
/// `GlueHandler`): a side is read only while the other side is writable (backpressure both ways); an
/// EOF on one side becomes a write shutdown on the other while the reverse direction keeps flowing;
/// the session ends when both channels are closed. Both channels must share one event loop, which is
/// what lets the handlers touch each other without locks.
public enum TCPRelay {
    /// Joins `client` and `target`. Call on their shared event loop.
    ///
    /// - Parameters:
    ///   - initialPayload: bytes the client sent ahead of the reply, written to the target first.
    ///   - clientInputClosed: the client already sent EOF; the target's write side is shut at once.
    ///   - allowance: what a user with a quota may still move (both directions spend it); nil for none.
    ///   - onEnd: called once, on the event loop, when both channels have closed.
    /// - Returns: a handle that can close the session.
    @discardableResult
    public static func start(
        client: any Channel,
        target: any Channel,
        configuration: RelayConfiguration,
        initialPayload: ByteBuffer?,
        clientInputClosed: Bool,
        allowance: ByteAllowance? = nil,
        timers: TimerWheel? = nil,
        onEnd: @escaping (RelayOutcome) -> Void
    ) throws -> RelaySession {
        precondition(client.eventLoop === target.eventLoop, "the relay needs both channels on one event loop")
        client.eventLoop.preconditionInEventLoop()
        let session = RelaySession(eventLoop: client.eventLoop, configuration: configuration, timers: timers, onEnd: onEnd)
        session.allowance = allowance
        let clientHandler = RelayHandler(side: .client, session: session, limiter: configuration.clientToTargetLimit)
        let targetHandler = RelayHandler(side: .target, session: session, limiter: configuration.targetToClientLimit)
        clientHandler.partner = targetHandler
        targetHandler.partner = clientHandler
        session.handlers = (clientHandler, targetHandler)

        try target.pipeline.syncOperations.addHandler(targetHandler)
        try client.pipeline.syncOperations.addHandler(clientHandler)
        // A limited side reads in small single reads, so that a pause follows every chunk instead
        // of a burst of the socket's whole receive queue. Its receive queue is kept to a tenth of a
        // second's worth too (the kernel doubles it): at the peer's EOF NIO reads the whole queue at
        // once, whatever the pauses, so an upload that ends with a FIN would pass the rate by as
        // much as the kernel had let the queue grow to (megabytes on a fast path).
        func readInChunks(_ channel: any Channel, limitedBy limiter: RateLimiter?) throws {
            guard let limiter, let options = channel.syncOptions else { return }
            let chunk = min(max(limiter.bytesPerSecond / 20, 4096), 256 * 1024)
            try options.setOption(.maxMessagesPerRead, value: 1)
            try options.setOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: chunk))
            let queue = min(max(limiter.bytesPerSecond / 10, 64 * 1024), 4 << 20)
            try options.setOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(queue))
        }
        try readInChunks(client, limitedBy: configuration.clientToTargetLimit)
        try readInChunks(target, limitedBy: configuration.targetToClientLimit)
        // Under a quota, one read at a time of at most a lease, from a receive queue of about a
        // lease: what is read past a used-up allowance is one read, plus at the peer's EOF (when
        // NIO reads the queue whole) that queue.
        if let allowance = allowance {
            for channel in [client, target] {
                guard let options = channel.syncOptions else { continue }
                try options.setOption(.maxMessagesPerRead, value: 1)
                try options.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: allowance.lease))
                try options.setOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(allowance.lease))
            }
        }
        if let initialPayload, initialPayload.readableBytes > 0 {
            allowance?.spend(initialPayload.readableBytes)
            session.counters.clientToTarget += UInt64(initialPayload.readableBytes)
            clientHandler.charge(initialPayload.readableBytes)
            target.writeAndFlush(initialPayload, promise: nil)
        }
        if clientInputClosed {
            session.noteEnd(.clientClosed)
            target.close(mode: .output, promise: nil)
        }
        session.startIdleTimer()
        // The target was connected with reading off, so that nothing it sent first was read before
        // the relay was in place; reading starts now.
        try target.syncOptions?.setOption(.autoRead, value: true)
        // Channels may have closed before the handlers were in place.
        if !client.isActive { clientHandler.sideClosed() }
        if !target.isActive { targetHandler.sideClosed() }
        return session
    }
}

/// One relayed session: its counters, its idle timer and the callback for its end. Lives on the
/// event loop of its channels.
public final class RelaySession {
    var counters = RelayCounters()
    /// Bytes moved so far. Read on the session's event loop.
    public var bytesSoFar: RelayCounters { counters }
    private var end: RelayEnd?
    private var onEnd: ((RelayOutcome) -> Void)?
    fileprivate var handlers: (client: RelayHandler, target: RelayHandler)?
    /// What a user with a quota may still move; both sides spend it.
    fileprivate var allowance: ByteAllowance?
    private var openSides = 2
    private var idleWatch: IdleWatch?

    fileprivate init(eventLoop: any EventLoop, configuration: RelayConfiguration, timers: TimerWheel?, onEnd: @escaping (RelayOutcome) -> Void) {
        self.onEnd = onEnd
        idleWatch = IdleWatch(
            timeout: configuration.idleTimeout, eventLoop: eventLoop, wheel: timers,
            activity: { [unowned self] in counters.clientToTarget &+ counters.targetToClient },
            onIdle: { [unowned self] in
                noteEnd(.idleTimeout)
                closeBoth()
            })
    }

    /// Closes both connections at once (server shutdown). Call on the session's event loop.
    public func close() {
        noteEnd(.closedByServer)
        closeBoth()
    }

    fileprivate func noteEnd(_ reason: RelayEnd) {
        if end == nil { end = reason }
    }

    fileprivate func closeBoth() {
        handlers?.client.closeChannel()
        handlers?.target.closeChannel()
    }

    fileprivate func sideClosed() {
        openSides -= 1
        guard openSides == 0 else {
            // The other side has nothing left to talk to.
            closeBoth()
            return
        }
        idleWatch?.stop()
        idleWatch = nil
        handlers = nil
        let callback = onEnd
        onEnd = nil
        callback?(RelayOutcome(counters: counters, end: end ?? .clientClosed))
    }

    fileprivate func startIdleTimer() {
        idleWatch?.start()
    }
}

/// One side of the relay: reads from its channel and writes into its partner's.
final class RelayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Side { case client, target }

    let side: Side
    let session: RelaySession
    /// The bandwidth limit on what this side reads, if any.
    let limiter: RateLimiter?
    fileprivate var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Reading is held back until the rate limiter's wait is over.
    private var throttled = false
    private var closed = false
    /// This side sent EOF before it closed.
    private var sawEOF = false
    /// The relay closed this side itself (the other side ended, idle timeout, shutdown).
    private var closing = false

    init(side: Side, session: RelaySession, limiter: RateLimiter?) {
        self.side = side
        self.session = session
        self.limiter = limiter
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        switch side {
        case .client: session.counters.clientToTarget &+= UInt64(buffer.readableBytes)
        case .target: session.counters.targetToClient &+= UInt64(buffer.readableBytes)
        }
        partner?.write(data)
        if limiter != nil { charge(buffer.readableBytes) }
        // Used up: neither side reads again (`read` holds it); the session's refill has said so
        // to its owner, who ends it.
        session.allowance?.spend(buffer.readableBytes)
    }

    /// Counts bytes read against the limiter; holds reading back for the wait it asks for.
    fileprivate func charge(_ bytes: Int) {
        guard let limiter, let eventLoop = context?.eventLoop ?? partner?.eventLoop else { return }
        let wait = limiter.consume(bytes)
        guard wait > .zero, !throttled else { return }
        throttled = true
        eventLoop.assumeIsolated().scheduleTask(in: wait) { [self] in
            throttled = false
            guard pendingRead, partner?.isWritable == true, session.allowance?.exhausted != true else { return }
            pendingRead = false
            context?.read()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Gone without an EOF and without the relay closing it: reset, or a write that failed.
        if !closing && !sawEOF { session.noteEnd(side == .client ? .clientError : .targetError) }
        sideClosed()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            sawEOF = true
            session.noteEnd(side == .client ? .clientClosed : .targetClosed)
            // Pass the EOF on; the reverse direction keeps flowing.
            partner?.shutDownOutput()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        session.noteEnd(side == .client ? .clientError : .targetError)
        session.closeBoth()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if session.allowance?.exhausted == true { return }
        if !throttled, partner?.isWritable == true {
            context.read()
        } else {
            pendingRead = true
        }
    }

    // MARK: What the partner asks of this side

    /// Writes what the partner read (flushed by `flush`).
    private func write(_ data: NIOAny) {
        context?.write(data, promise: nil)
    }

    private func flush() {
        context?.flush()
    }

    /// The partner sent EOF: so does this side, while it still reads.
    private func shutDownOutput() {
        context?.close(mode: .output, promise: nil)
    }

    /// Whether this side's channel takes more writes now: the partner reads only then.
    private var isWritable: Bool { context?.channel.isWritable == true }

    private var eventLoop: (any EventLoop)? { context?.eventLoop }

    private func partnerBecameWritable() {
        guard pendingRead, !throttled, session.allowance?.exhausted != true else { return }
        pendingRead = false
        context?.read()
    }

    fileprivate func closeChannel() {
        closing = true
        context?.close(promise: nil)
    }

    fileprivate func sideClosed() {
        guard !closed else { return }
        closed = true
        session.sideClosed()
    }
}
