import Logging
import NIOCore
import SOCKSProtocol

#if canImport(Glibc)
import Glibc
#endif

/// What a listening socket does when the process runs out of descriptors (or memory): stop
/// accepting for a short pause and try again, rather than retrying on every wake-up and spinning a
/// core; it says so once when a spell starts and once when accepting works again.
///
/// NIO's `AcceptBackoffHandler` cannot do this here: after a failed `accept` the server channel
/// keeps its read pending and stays registered for readability, so the handler is never asked to
/// read again while the level-triggered listener wakes the loop over and over. Turning `autoRead`
/// off does take the listener out of the poll set; turning it on again after the pause re-arms it.
final class AcceptBackoff: ChannelInboundHandler {
    typealias InboundIn = any Channel

    /// The pause after an accept failed for want of resources.
    static let pause: TimeAmount = .milliseconds(250)

    let listener: String
    let logger: Logger
    private var resuming: Scheduled<Void>?
    private var saturated = false
    private var failures = 0

    init(listener: String, logger: Logger) {
        self.listener = listener
        self.logger = logger
    }

    /// The errors that mean "no resources now", worth a pause; any other error is not.
    static func isResourceShortage(_ error: any Error) -> Bool {
        guard let error = error as? IOError else { return false }
        switch error.errnoCode {
        case EMFILE, ENFILE, ENOBUFS, ENOMEM: return true
        default: return false
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if saturated {
            saturated = false
            logger.notice("accepting again", metadata: ["listener": "\(label(context))", "failed_accepts": "\(failures)"])
            failures = 0
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard Self.isResourceShortage(error) else {
            context.fireErrorCaught(error)
            return
        }
        failures += 1
        if !saturated {
            saturated = true
            logger.warning(
                "cannot accept: out of file descriptors or memory; pausing accepts until some are free",
                metadata: ["listener": "\(label(context))", "error": "\(error)", "pause": "\(Self.pause)"])
        }
        guard resuming == nil, let options = context.channel.syncOptions else { return }
        try? options.setOption(.autoRead, value: false)
        resuming = context.eventLoop.assumeIsolated().scheduleTask(in: Self.pause) { [self] in
            resuming = nil
            try? options.setOption(.autoRead, value: true)
        }
    }

    /// The address the listener is bound to (the configured one may say port 0).
    private func label(_ context: ChannelHandlerContext) -> String {
        context.channel.localAddress?.endpointText ?? listener
    }

    func channelInactive(context: ChannelHandlerContext) {
        resuming?.cancel()
        resuming = nil
        context.fireChannelInactive()
    }
}
