import NIOCore

/// The client connection's handler: it only hands the channel's events to its `Session`, which
/// does the work. It leaves the pipeline once the relay owns the channel.
final class SOCKSServerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let session: Session

    init(session: Session) {
        self.session = session
    }

    func handlerAdded(context: ChannelHandlerContext) {
        session.attach(to: context.channel, handler: self)
    }

    func channelActive(context: ChannelHandlerContext) {
        // Client rules come before any negotiation.
        if session.admit() { context.fireChannelActive() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        session.received(&bytes)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            session.inputClosed()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.channelClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        session.clientError(error)
    }
}
