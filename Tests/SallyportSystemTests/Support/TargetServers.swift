import SallyportTestSupport
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SOCKSProtocol
import Sallyport
import SallyportAuth
import SallyportPolicy

/// Echoes every byte; on EOF it finishes writing and shuts its write side (half-close aware).
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            context.close(mode: .output, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Answers any request with a fixed HTTP response, then closes.
final class HTTPResponder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let body: String
    private var received = ""
    private var answered = false

    init(body: String) { self.body = body }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += String(buffer: unwrapInboundIn(data))
        guard !answered, received.contains("\r\n\r\n") else { return }
        answered = true
        let response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Sends a banner as soon as a client connects (as SSH and SMTP servers do), then echoes.
final class BannerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let banner: String

    init(banner: String) { self.banner = banner }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: banner)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            context.close(promise: nil)
        }
    }
}

/// A TCP server on loopback for tests, on a port the system picks.
struct TargetServer {
    let channel: any Channel
    var port: Int { channel.localAddress!.port! }

    static func start(host: String = "127.0.0.1", _ makeHandler: @escaping @Sendable () -> any ChannelHandler & Sendable) async throws -> TargetServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(makeHandler())
                }
            }
            .bind(host: host, port: 0).get()
        ServerScope.register { try? await channel.close() }
        return TargetServer(channel: channel)
    }

    static func echo(host: String = "127.0.0.1") async throws -> TargetServer {
        try await start(host: host) { EchoHandler() }
    }

    func stop() async {
        try? await channel.close()
    }
}

// The handlers above live on one event loop each; NIO hands them to their loop once.
extension EchoHandler: @unchecked Sendable {}
extension HTTPResponder: @unchecked Sendable {}
extension BannerHandler: @unchecked Sendable {}


/// A running Sallyport for one test.
struct TestProxy {
    let server: SallyportServer
    let addresses: [SocketAddress]
    let logs: LogCapture
    var port: Int { addresses[0].port! }

    static func start(
        configure: (inout ServerConfiguration) -> Void = { _ in },
        authenticator: (any Authenticator)? = nil
    ) async throws -> TestProxy {
        var configuration = ServerConfiguration(listeners: [ListenerConfiguration(host: "127.0.0.1", port: 0)])
        configuration.timeouts.shutdownGrace = .zero
        // Usage totals in memory only: a test never writes /var/lib/sallyport.
        configuration.usage.stateDirectory = nil
        // The targets of these tests live on loopback, which the special-address guard keeps out of
        // reach: an explicit rule allows it, as a real configuration would have to.
        configuration.policy = Policy(rules: [
            EgressRule(name: "test-loopback", action: .allow, to: [.block(CIDR("127.0.0.0/8")!), .block(CIDR("::1/128")!)]),
            EgressRule(name: "public", action: .allow, to: [.any]),
        ])
        configure(&configuration)
        let logs = LogCapture()
        let server = SallyportServer(
            configuration: configuration, authenticator: authenticator, logger: logs.logger(label: "sallyport"),
            accessLogger: logs.logger(label: "sallyport.access"))
        ServerScope.register { await server.shutdown(grace: .zero) }
        let addresses = try await server.start()
        return TestProxy(server: server, addresses: addresses, logs: logs)
    }

    func stop() async {
        await server.shutdown(grace: .zero)
    }
}

/// Accepts any user whose password is "pw-" followed by the user name.
struct TestAuthenticator: Authenticator {
    func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let ok = request.password == Password("pw-\(request.username)")
        return eventLoop.makeSucceededFuture(ok ? .success(Identity(user: request.username, groups: ["staff"])) : .failure(reason: "bad password"))
    }
}

/// Accepts everyone, but only after `delay`.
struct SlowAuthenticator: Authenticator {
    let delay: TimeAmount

    func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let user = request.username
        return eventLoop.scheduleTask(in: delay) { AuthenticationResult.success(Identity(user: user)) }.futureResult
    }
}

/// Reads everything; at EOF writes the number of bytes it read, then closes.
final class DiscardHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: one instance per channel, used on its event loop only.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var count = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        count += unwrapInboundIn(data).readableBytes
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "\(count)"))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }
}
