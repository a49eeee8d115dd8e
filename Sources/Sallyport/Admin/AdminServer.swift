import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin listener: its listening socket and every connection it accepted, so that a reload
/// that moves or removes it closes them all (a kept connection would otherwise go on being served
/// under rules the new file took away). Connections past `maximumConnections` are closed at
/// accept; each has an idle and a request timeout (`AdminConnectionTimer`); accepting pauses when
/// descriptors run out (`AcceptBackoff`).
final class AdminListener: Sendable {
    let channel: any Channel
    private let connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>

    /// What the listener was bound with: a reload that changes any of it binds again.
    let settings: AdminSettings

    private init(channel: any Channel, connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>, settings: AdminSettings) {
        self.channel = channel
        self.connections = connections
        self.settings = settings
    }

    var localAddress: SocketAddress? { channel.localAddress }

    /// The connections open now.
    var connectionCount: Int { connections.withLockedValue { $0.count } }

    /// Binds the admin listener of `settings` (which must name a host).
    static func bind(_ settings: AdminSettings, backend: any AdminBackend, group: any EventLoopGroup, logger: Logger) async throws -> AdminListener {
        let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
        let limits = settings.connectionLimits
        let host = settings.host ?? "127.0.0.1"
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptBackoff(listener: settings.addressDescription, logger: logger))
                }
            }
            .childChannelInitializer { channel in
                let admitted = connections.withLockedValue { open -> Bool in
                    guard open.count < limits.maximum else { return false }
                    open[ObjectIdentifier(channel)] = channel
                    return true
                }
                guard admitted else { return channel.close() }
                channel.closeFuture.whenComplete { _ in connections.withLockedValue { _ = $0.removeValue(forKey: ObjectIdentifier(channel)) } }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminConnectionTimer(idle: limits.idle, request: limits.request), position: .first)
                    try channel.pipeline.syncOperations.addHandler(AdminHTTPHandler(backend: backend, listenerHost: host))
                }
            }
            .bind(host: host, port: settings.port).get()
        return AdminListener(channel: channel, connections: connections, settings: settings)
    }

    /// Closes the listening socket, then every connection it accepted.
    func close() async {
        try? await channel.close()
        let open = connections.withLockedValue { $0.values }
        for connection in open { try? await connection.close() }
    }
}

/// Collects a request (its body is not used, and bounded) and writes the routes' answer.
final class AdminHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let backend: any AdminBackend
    private let listenerHost: String
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    init(backend: any AdminBackend, listenerHost: String) {
        self.backend = backend
        self.listenerHost = listenerHost
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            bodyBytes = 0
        case .body(let body):
            bodyBytes += body.readableBytes
            if bodyBytes > 64 * 1024 { context.close(promise: nil) }
        case .end:
            guard let head else { return }
            self.head = nil
            let keepAlive = head.isKeepAlive
            let version = head.version
            let context = NIOLoopBound(context, eventLoop: context.eventLoop)
            let request = AdminRequest(head: head, listenerHost: listenerHost)
            AdminRoutes.respond(to: request, backend: backend, on: context.value.eventLoop)
                .whenComplete { result in
                    let response = (try? result.get()) ?? .text(.internalServerError, "internal error")
                    Self.write(response, version: version, keepAlive: keepAlive, context: context.value)
                }
        }
    }

    /// A request that does not parse (NIO has answered 400 already): the connection ends.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private static func write(_ response: AdminResponse, version: HTTPVersion, keepAlive: Bool, context: ChannelHandlerContext) {
        var body = context.channel.allocator.buffer(capacity: response.body.utf8.count)
        body.writeString(response.body)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: "\(body.readableBytes)")
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "X-Frame-Options", value: "DENY")
        headers.add(name: "Referrer-Policy", value: "no-referrer")
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: version, status: response.status, headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(body))), promise: nil)
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: done)
        if !keepAlive {
            let channel = context.channel
            done.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// The admin connection's two clocks, seen on the raw bytes: between requests a connection may
/// stay silent for `idle`; once a request's first byte is in, the request must be complete (and
/// answered) within `request`, so that a client sending a byte at a time cannot hold it.
final class AdminConnectionTimer: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let idle: TimeAmount
    private let request: TimeAmount
    private var timer: Scheduled<Void>?
    private var reading = false

    init(idle: TimeAmount, request: TimeAmount) {
        self.idle = idle
        self.request = request
    }

    func handlerAdded(context: ChannelHandlerContext) { arm(context, idle) }

    func handlerRemoved(context: ChannelHandlerContext) { timer?.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !reading {
            reading = true
            arm(context, request)
        }
        context.fireChannelRead(data)
    }

    func flush(context: ChannelHandlerContext) {
        // An answer went out (the routes write each in full, then flush): silence is idle again.
        reading = false
        arm(context, idle)
        context.flush()
    }

    private func arm(_ context: ChannelHandlerContext, _ amount: TimeAmount) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: amount) { channel.close(promise: nil) }
    }
}
