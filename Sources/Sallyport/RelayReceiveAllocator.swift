import NIOCore

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
