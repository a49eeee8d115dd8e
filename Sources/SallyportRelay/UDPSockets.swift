import NIOCore
import NIOPosix
import SOCKSProtocol

/// Why an association could not be opened.
public enum UDPRelayError: Error {
    case noFreePort
}

extension UDPAssociation {
    /// Binds attempted per association when a port range is configured: a range that busy is
    /// exhausted in practice, and each attempt costs a socket on the event loop.
    static let maxBindAttempts = 64

    /// The ports to try, in order: 0 (any free port) without a range; a small range whole, from
    /// a random start; a large one at `maxBindAttempts` random ports.
    public static func bindCandidates(_ ports: ClosedRange<Int>?) -> [Int] {
        guard let ports else { return [0] }
        if ports.count <= maxBindAttempts {
            let offset = Int.random(in: 0..<ports.count)
            return (0..<ports.count).map { ports.lowerBound + ($0 + offset) % ports.count }
        }
        return (0..<maxBindAttempts).map { _ in Int.random(in: ports) }
    }

    static func bindFirst(
        of ports: [Int], at index: Int = 0, host: String, on eventLoop: any EventLoop, handler: NIOLoopBound<UDPClientHandler>
    ) -> EventLoopFuture<any Channel> {
        guard index < ports.count else {
            return eventLoop.makeFailedFuture(UDPRelayError.noFreePort)
        }
        // NIO's datagram bootstrap leaves a channel whose bind failed open and registered: each
        // port tried in a busy range would keep a descriptor until the server stops.
        let attempt = NIOLoopBoundBox<(any Channel)?>(nil, eventLoop: eventLoop)
        return datagramBootstrap(on: eventLoop) { channel in
            channel.eventLoop.makeCompletedFuture {
                attempt.value = channel
                try channel.pipeline.syncOperations.addHandler(handler.value)
            }
        }
        .bind(host: host, port: ports[index])
        .flatMapError { error in
            attempt.value?.close(promise: nil)
            return index + 1 < ports.count
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

    init(association: UDPAssociation) {
        self.association = association
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

