import FoundationEssentials
import NIOCore
import SOCKSProtocol
import SallyportPolicy

/// What an upstream handshake says after each read.
public enum UpstreamStep: Equatable {
    case send(ByteBuffer)
    case needMoreData
    /// Through: what is left in the buffer is the target's.
    case established
    case failed(SOCKSReplyCode, String)
}

/// The client side of a CONNECT through another proxy, as a value.
public protocol UpstreamHandshaking: Sendable {
    /// The first bytes to send.
    func opening() -> ByteBuffer
    mutating func process(_ buffer: inout ByteBuffer) -> UpstreamStep
}

extension SOCKS5ClientHandshake: UpstreamHandshaking {
    public func opening() -> ByteBuffer { greeting() }

    public mutating func process(_ buffer: inout ByteBuffer) -> UpstreamStep {
        switch process(&buffer) as Step {
        case .send(let bytes): return .send(bytes)
        case .needMoreData: return .needMoreData
        case .established: return .established
        case .failed(let code, let reason): return .failed(code, reason)
        }
    }
}

/// HTTP CONNECT (RFC 9110 section 9.3.6) to an upstream: the request with Basic credentials when
/// given, then the response head, read up to `maximumHead` bytes.
public struct HTTPConnectHandshake: UpstreamHandshaking {
    let destination: SOCKSEndpoint
    let authorization: String?
    private var done = false

    static let maximumHead = 16 * 1024

    /// Nil when a part would not be data in the request head: a destination name that is not a
    /// DNS name (the parser refuses those, so this is the second line), or a user name holding a
    /// colon or a control character (Basic credentials are `user:password`). The password goes
    /// only into base64, where no byte of it can end a line.
    public init?(destination: SOCKSEndpoint, username: String?, password: String?) {
        if case .domain(let name) = destination.host, !DestinationName.isNormalized(name) { return nil }
        if let username, username.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: ":") }) { return nil }
        self.destination = destination
        authorization = username.map { "Basic " + Data("\($0):\(password ?? "")".utf8).base64EncodedString() }
    }

    public func opening() -> ByteBuffer {
        let target = destination.description
        var head = "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n"
        if let authorization { head += "Proxy-Authorization: \(authorization)\r\n" }
        head += "\r\n"
        return ByteBuffer(string: head)
    }

    public mutating func process(_ buffer: inout ByteBuffer) -> UpstreamStep {
        guard !done else { return .needMoreData }
        let view = buffer.readableBytesView
        // Too long is decided by where the head ends, not by how much came in one read: the same
        // answer in one read or in many gets the same step.
        let end = Self.endOfHead(view)
        guard let end, end - view.startIndex <= Self.maximumHead else {
            if end != nil || view.count >= Self.maximumHead + 4 {
                return fail(.generalFailure, "the upstream's response head is longer than \(Self.maximumHead) bytes")
            }
            return .needMoreData
        }
        let head = String(decoding: view[view.startIndex..<end], as: UTF8.self)
        buffer.moveReaderIndex(forwardBy: end + 4 - view.startIndex)
        done = true
        let statusLine = head.split(separator: "\r\n", maxSplits: 1).first ?? ""
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            return .failed(.generalFailure, "the upstream's response is not HTTP: \(statusLine.prefix(80))")
        }
        if (200..<300).contains(status) { return .established }
        return .failed(Self.replyCode(forStatus: status), "the upstream answered \(statusLine.prefix(80))")
    }

    /// What a refused CONNECT means to a SOCKS client.
    static func replyCode(forStatus status: Int) -> SOCKSReplyCode {
        switch status {
        case 403, 407: return .notAllowed
        case 404, 502, 503: return .hostUnreachable
        case 504: return .ttlExpired
        default: return .generalFailure
        }
    }

    private static func endOfHead(_ view: ByteBufferView) -> Int? {
        var index = view.startIndex
        while index + 3 < view.endIndex {
            if view[index] == 13, view[index + 1] == 10, view[index + 2] == 13, view[index + 3] == 10 { return index }
            index += 1
        }
        return nil
    }

    private mutating func fail(_ code: SOCKSReplyCode, _ reason: String) -> UpstreamStep {
        done = true
        return .failed(code, reason)
    }
}

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
            switch handshake.process(&buffer) {
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
