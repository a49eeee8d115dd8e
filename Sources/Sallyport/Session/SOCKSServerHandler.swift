import NIOCore
import NIOSSL
import NIOTLS
import SOCKSProtocol

/// The client connection's handler: it only hands the channel's events to its `Session`, which
/// does the work. It leaves the pipeline once the relay owns the channel.
final class SOCKSServerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let session: Session
    /// The listener's TLS, when SOCKS runs inside it.
    private let tls: ServerTLS?
    private var handshaking: Bool

    init(session: Session, tls: ServerTLS? = nil) {
        self.session = session
        self.tls = tls
        handshaking = tls != nil
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
        } else if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            handshaking = false
            // Before any SOCKS byte: NIOSSL reports the handshake before the data that follows it.
            guard let tls, tls.identifiesClients else { return }
            let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate
            switch tls.identity(of: certificate) {
            case .success(let identity): session.certified(as: identity)
            case .failure(let reason): session.turnAway(.certificateRefused, notice: "client certificate refused", ["reason": "\(reason)"])
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.channelClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed handshake is worth an administrator's eye: no certificate, an unknown CA, an
        // expired one, or not TLS at all.
        if handshaking, error is NIOSSLError {
            handshaking = false
            return session.turnAway(.tlsFailed, notice: "TLS handshake failed", ["error": "\(error)"])
        }
        session.clientError(error)
    }
}

/// On a listener behind a PROXY-protocol balancer: reads the header off the front of the
/// connection, tells the session which client it names, then leaves the pipeline, handing on
/// what came after the header (through TLS first, on a TLS listener: the header comes before TLS).
final class ProxyHeaderReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let session: Session
    private let version: ProxyProtocolVersion
    private let tls: ServerTLS?
    private var buffer = ByteBuffer()
    private var done = false

    init(session: Session, version: ProxyProtocolVersion, tls: ServerTLS?) {
        self.session = session
        self.version = version
        self.tls = tls
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        switch buffer.takeProxyHeader(version) {
        case .incomplete: return
        case .refused(let reason):
            done = true
            session.turnAway(.proxyHeaderRefused, notice: "PROXY protocol header refused", ["reason": "\(reason)"])
        case .local:
            done = true
            session.turnAway(.proxyLocal, notice: nil)  // the balancer's own health check: nothing to serve
        case .client(let client):
            done = true
            guard session.proxied(for: client) else { return }
            if let tls {
                do {
                    try tls.addHandlers(to: context.pipeline.syncOperations, after: self)
                } catch {
                    return session.clientError(error)
                }
            }
            let rest = buffer
            buffer = ByteBuffer()
            if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}
