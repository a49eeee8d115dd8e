import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The receive-buffer sizing of relayed channels: NIO's adaptive sizing (reads grow towards the
/// maximum while they fill their buffer, and shrink when they do not), without NIO's receive-buffer
/// pool holding on to large buffers.
///
/// NIO keeps the buffers a channel read into for reuse, for the channel's whole life; a session that
/// once moved bulk data would keep its largest buffers (up to the maximum read size per side) while
/// it idles. By giving no size hint and always reporting that reads may grow, every read gets a
/// fresh buffer of the adaptive size, and the pool (one slot, see `readsPerWakeUp`) keeps only the
/// first, small one. The cost is one allocation per read, small beside the read itself.
struct RelayReceiveAllocator: RecvByteBufferAllocator {
    private var adaptive: AdaptiveRecvByteBufferAllocator

    init(initial: Int, maximum: Int) {
        adaptive = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: initial, maximum: maximum)
    }

    func buffer(allocator: ByteBufferAllocator) -> ByteBuffer {
        adaptive.buffer(allocator: allocator)
    }

    mutating func record(actualReadBytes: Int) -> Bool {
        _ = adaptive.record(actualReadBytes: actualReadBytes)
        return true
    }
}

/// The options of every relayed TCP channel, client side and target side alike.
///
/// Set synchronously from the channel's initializer: a bootstrap's own option list costs a chain of
/// futures per option and per connection, a measurable part of a short session's set-up.
struct RelayChannelOptions: Sendable {
    /// Socket reads per readiness event. NIO's receive-buffer pool has one slot per read it may make
    /// in a row; with one, and `RelayReceiveAllocator`, an idle session keeps no large buffer (with
    /// NIO's default of 4 and its pool, a session that once moved bulk data kept 4 × 256 KiB per
    /// side while idle: 2 MiB a session).
    static let readsPerWakeUp: UInt = 1

    /// The largest single read.
    var receiveBufferBytes: Int

    /// Applies the options; `autoRead` off for a target channel, which the relay starts reading once
    /// it is in place so that no byte the target sends first is lost.
    func apply(to channel: any Channel, autoRead: Bool = true) throws {
        guard let options = channel.syncOptions else {
            throw ChannelError.operationUnsupported
        }
        try options.setOption(.allowRemoteHalfClosure, value: true)
        try options.setOption(.maxMessagesPerRead, value: Self.readsPerWakeUp)
        try options.setOption(.recvAllocator, value: RelayReceiveAllocator(initial: 512, maximum: receiveBufferBytes))
        if !autoRead {
            try options.setOption(.autoRead, value: false)
        }
    }
}

extension TCPKeepalive {
    /// Sets keepalive on a socket (`keepalive`), or turns it off (nil). Accepted sockets inherit
    /// all four options from their listener, so a listener set once costs no session anything.
    static func apply(_ keepalive: TCPKeepalive?, to options: NIOSynchronousChannelOptions) throws {
        try options.setOption(.socketOption(.so_keepalive), value: keepalive == nil ? 0 : 1)
        guard let keepalive else { return }
        for (name, value) in [
            (TCP_KEEPIDLE, keepalive.idle.nanoseconds / 1_000_000_000), (TCP_KEEPINTVL, keepalive.interval.nanoseconds / 1_000_000_000),
            (TCP_KEEPCNT, Int64(keepalive.count)),
        ] {
            try options.setOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: name)), value: SocketOptionValue(value))
        }
    }
}
