import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin listener's HTTP/1.1 server: parses requests with SwiftNIO's HTTP/1 handlers, answers
/// each through `AdminRoutes`, one at a time per connection (keep-alive).
enum AdminServer {
    /// Binds the admin listener; the channel is returned for closing at shutdown.
    static func bind(host: String, port: Int, backend: any AdminBackend, group: any EventLoopGroup) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHTTPHandler(backend: backend))
                }
            }
            .bind(host: host, port: port).get()
    }
}

/// Collects a request (its body is not used, and bounded) and writes the routes' answer.
final class AdminHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let backend: any AdminBackend
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    init(backend: any AdminBackend) {
        self.backend = backend
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
            AdminRoutes.respond(to: AdminRequest(head: head), backend: backend, on: context.value.eventLoop)
                .whenComplete { result in
                    let response = (try? result.get()) ?? .text(.internalServerError, "internal error")
                    Self.write(response, version: version, keepAlive: keepAlive, context: context.value)
                }
        }
    }

    private static func write(_ response: AdminResponse, version: HTTPVersion, keepAlive: Bool, context: ChannelHandlerContext) {
        var body = context.channel.allocator.buffer(capacity: response.body.utf8.count)
        body.writeString(response.body)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: "\(body.readableBytes)")
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
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
