import NIOCore
import NIOPosix
import SallyportRelay

/// A BIND's listening socket (RFC 1928 section 4): on the address of the interface the client
/// reached the server through, in `bind.port_range` when set; it takes exactly one connection, from
/// a peer `admits` lets in, hands it over with reading off (no byte the peer sends first is lost
/// before the relay is in place) and stops listening. A peer refused is closed at once and the
/// wait goes on. Lives on the session's event loop; the peer's connection is on the same loop, as
/// the relay needs.
final class BindListener {
    private let channel: any Channel
    /// Where it listens.
    let boundAddress: SocketAddress
    private var handedOver = false

    private init(channel: any Channel, boundAddress: SocketAddress) {
        self.channel = channel
        self.boundAddress = boundAddress
    }

    /// Stops listening (the peer's connection, once handed over, is the relay's).
    func close() {
        channel.close(promise: nil)
    }

    /// Listens on `host`; `admits` judges each connecting peer, `onPeer` gets the first it admits.
    static func open(
        on eventLoop: any EventLoop, host: String, ports: ClosedRange<Int>?, options: RelayChannelOptions, keepalive: TCPKeepalive?,
        admits: @escaping (SocketAddress) -> Bool, onPeer: @escaping (any Channel) -> Void
    ) -> EventLoopFuture<BindListener> {
        let hooks = NIOLoopBound(Hooks(admits: admits, onPeer: onPeer), eventLoop: eventLoop)
        return bindFirst(of: UDPAssociation.bindCandidates(ports), host: host, on: eventLoop, hooks: hooks, options: options, keepalive: keepalive)
            .flatMapThrowing { channel in
                guard let bound = channel.localAddress else {
                    channel.close(promise: nil)
                    throw ChannelError.unknownLocalAddress
                }
                let listener = BindListener(channel: channel, boundAddress: bound)
                hooks.value.listener = listener
                return listener
            }
    }

    /// What the session asked for, reached from the accepted connections' handlers.
    final class Hooks {
        let admits: (SocketAddress) -> Bool
        let onPeer: (any Channel) -> Void
        weak var listener: BindListener?

        init(admits: @escaping (SocketAddress) -> Bool, onPeer: @escaping (any Channel) -> Void) {
            self.admits = admits
            self.onPeer = onPeer
        }

        /// A connection is up: the first admitted one is the peer; the rest are closed.
        func accepted(_ peer: any Channel) {
            guard let listener, !listener.handedOver, let address = peer.remoteAddress, admits(address) else {
                peer.close(promise: nil)
                return
            }
            listener.handedOver = true
            listener.close()
            onPeer(peer)
        }
    }

    private static func bindFirst(
        of ports: [Int], at index: Int = 0, host: String, on eventLoop: any EventLoop, hooks: NIOLoopBound<Hooks>, options: RelayChannelOptions,
        keepalive: TCPKeepalive?
    ) -> EventLoopFuture<any Channel> {
        guard index < ports.count else { return eventLoop.makeFailedFuture(UDPRelayError.noFreePort) }
        return ServerBootstrap(group: eventLoop, childGroup: eventLoop)
            // One peer is awaited; a few more may queue until they are refused.
            .serverChannelOption(.backlog, value: 8)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try options.apply(to: channel, autoRead: false)
                    if let keepalive, let syncOptions = channel.syncOptions { try TCPKeepalive.apply(keepalive, to: syncOptions) }
                    try channel.pipeline.syncOperations.addHandler(BindPeerHandoff(hooks: hooks.value))
                }
            }
            .bind(host: host, port: ports[index])
            .flatMapError { error in
                index + 1 < ports.count
                    ? bindFirst(of: ports, at: index + 1, host: host, on: eventLoop, hooks: hooks, options: options, keepalive: keepalive)
                    : eventLoop.makeFailedFuture(error)
            }
    }
}

/// Hands an accepted connection to its BIND once it is active, and leaves its pipeline.
private final class BindPeerHandoff: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let hooks: BindListener.Hooks
    private var handedOver = false

    init(hooks: BindListener.Hooks) {
        self.hooks = hooks
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { handOver(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        handOver(context)
        context.fireChannelActive()
    }

    private func handOver(_ context: ChannelHandlerContext) {
        guard !handedOver else { return }
        handedOver = true
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        hooks.accepted(context.channel)
    }
}
