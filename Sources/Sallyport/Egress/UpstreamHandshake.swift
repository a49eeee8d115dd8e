import NIOCore
import SOCKSProtocol
import SallyportPolicy

/// Drives a handshake on a fresh connection to the upstream (reading off: it reads one read at
/// a time), then leaves the pipeline; `done` gets the bytes of the target that came with the last
/// answer, or the failure. Gives up after `timeout`.
final class UpstreamHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var handshake: any UpstreamHandshaking
    private let upstream: UpstreamProxy
    private let done: EventLoopPromise<ByteBuffer?>
    private let timeout: TimeAmount
    private var buffer = ByteBuffer()
    private var timer: Scheduled<Void>?
    private var finished = false

    init(handshake: any UpstreamHandshaking, upstream: UpstreamProxy, timeout: TimeAmount, done: EventLoopPromise<ByteBuffer?>) {
        self.handshake = handshake
        self.upstream = upstream
        self.timeout = timeout
        self.done = done
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = loopBound.value
            handler.fail(context, ConnectFailure(code: .ttlExpired, reason: "\(handler.upstream): no answer in time"))
        }
        context.writeAndFlush(wrapOutboundOut(handshake.opening()), promise: nil)
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        while !finished {
            switch handshake.advance(&buffer) {
            case .send(let bytes):
                context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
            case .needMoreData:
                context.read()
                return
            case .established:
                finished = true
                timer?.cancel()
                let leftover = buffer.readableBytes > 0 ? buffer : nil
                context.pipeline.syncOperations.removeHandler(self, promise: nil)
                done.succeed(leftover)
            case .failed(let code, let reason):
                fail(context, ConnectFailure(code: code, reason: "\(upstream): \(reason)", configuration: code == .generalFailure))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(context, ConnectFailure(code: .generalFailure, reason: "\(upstream): closed the connection during the handshake", configuration: true))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context, ConnectFailure(code: .generalFailure, reason: "\(upstream): \(error)", configuration: true))
    }

    private func fail(_ context: ChannelHandlerContext, _ failure: ConnectFailure) {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        context.close(promise: nil)
        done.fail(failure)
    }
}
