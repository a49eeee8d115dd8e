import ArgumentParser
import NIOCore
import NIOPosix

/// The least a SwiftNIO SOCKS5 CONNECT relay does, as a yardstick for what NIO itself costs per
/// connection: method none, IPv4 requests only, connect, reply, then two handlers passing bytes
/// (half-close included). No policy, limits, timers, logging or error replies: not a proxy to run,
/// only the floor Sallyport's own cost is measured against.
struct FloorProxy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floor-proxy", abstract: "Run a bare SwiftNIO SOCKS5 relay (a yardstick, not a proxy to use).")

    @Option(help: "Address to listen on.") var listen: Endpoint = Endpoint(argument: "127.0.0.1:0")!

    func run() throws {
        raiseFileLimit()
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FloorNegotiator()) }
            }
            .bind(host: listen.host, port: listen.port).wait()
        print(channel.localAddress!.port!)
        fflush(nil)
        try channel.closeFuture.wait()
    }
}

/// Greeting and an IPv4 CONNECT request, answered as soon as they are complete.
final class FloorNegotiator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var buffer = ByteBuffer()
    private var greeted = false
    private var requested = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        if !greeted {
            guard let count = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self),
                buffer.readableBytes >= 2 + Int(count)
            else { return }
            buffer.moveReaderIndex(forwardBy: 2 + Int(count))
            greeted = true
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: [5, 0])), promise: nil)
        }
        guard !requested, let request = buffer.readBytes(length: 10) else { return }
        requested = true
        guard let address = try? SocketAddress(packedIPAddress: ByteBuffer(bytes: request[4..<8]), port: Int(request[8]) << 8 | Int(request[9])) else {
            context.close(promise: nil)
            return
        }
        let client = context.channel
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.autoRead, value: false)
            .connect(to: address)
            .assumeIsolated()
            .whenComplete { result in
                guard case .success(let target) = result else {
                    client.close(promise: nil)
                    return
                }
                do {
                    let (clientSide, targetSide) = (FloorGlue(), FloorGlue())
                    clientSide.partner = targetSide
                    targetSide.partner = clientSide
                    try target.pipeline.syncOperations.addHandler(targetSide)
                    try client.pipeline.syncOperations.addHandler(clientSide)
                    client.writeAndFlush(ByteBuffer(bytes: [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]), promise: nil)
                    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                    try target.syncOptions?.setOption(.autoRead, value: true)
                } catch {
                    target.close(promise: nil)
                    client.close(promise: nil)
                }
            }
    }
}

/// Passes what its channel reads to its partner's; EOF becomes a write shutdown on the other side.
final class FloorGlue: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    var partner: FloorGlue?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.context?.write(data, promise: nil) }
    func channelReadComplete(context: ChannelHandlerContext) { partner?.context?.flush() }
    func channelInactive(context: ChannelHandlerContext) { partner?.context?.close(promise: nil) }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event { partner?.context?.close(mode: .output, promise: nil) }
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}
