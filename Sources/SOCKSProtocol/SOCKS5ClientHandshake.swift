import NIOCore

/// The client side of a SOCKS5 CONNECT (RFC 1928, with RFC 1929 credentials when given), as a
/// value: for talking to an upstream proxy. Bytes in, steps out; the caller owns the socket.
public struct SOCKS5ClientHandshake: Sendable {
    public enum Step: Sendable, Equatable {
        /// Send these bytes, then read.
        case send(ByteBuffer)
        /// Read more.
        case needMoreData
        /// The upstream connected; bytes left in the buffer are the target's.
        case established(bound: SOCKSEndpoint)
        /// The upstream refused: the reply code for our client (its own code for a refused
        /// CONNECT, 0x01 for a refused method or login) and why.
        case failed(SOCKSReplyCode, String)
    }

    enum State: Sendable {
        case awaitingMethod
        case awaitingLogin
        case awaitingReply
        case done
    }

    let destination: SOCKSEndpoint
    let credentials: (username: [UInt8], password: [UInt8])?
    private var state = State.awaitingMethod

    /// `credentials`: offered with method 0x02 as well as 0x00 (each 1 to 255 bytes).
    public init(destination: SOCKSEndpoint, username: String? = nil, password: String? = nil) {
        self.destination = destination
        if let username { credentials = (Array(username.utf8.prefix(255)), Array((password ?? "").utf8.prefix(255))) } else { credentials = nil }
    }

    /// The greeting: methods none, and username/password when there are credentials.
    public func greeting() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeClientGreeting(ClientGreeting(methods: credentials == nil ? [.none] : [.none, .usernamePassword]))
        return buffer
    }

    public mutating func process(_ buffer: inout ByteBuffer) -> Step {
        switch state {
        case .awaitingMethod:
            guard let bytes = buffer.readBytes(length: 2) else { return .needMoreData }
            guard bytes[0] == 5 else { return fail(.generalFailure, "the upstream does not speak SOCKS5 (version \(bytes[0]))") }
            switch bytes[1] {
            case AuthenticationMethod.none.rawValue:
                return request()
            case AuthenticationMethod.usernamePassword.rawValue where credentials != nil:
                state = .awaitingLogin
                var login = ByteBuffer()
                login.writeInteger(UInt8(1))
                login.writeInteger(UInt8(credentials!.username.count))
                login.writeBytes(credentials!.username)
                login.writeInteger(UInt8(credentials!.password.count))
                login.writeBytes(credentials!.password)
                return .send(login)
            default:
                return fail(.generalFailure, "the upstream accepts none of the offered methods (it chose \(bytes[1]))")
            }
        case .awaitingLogin:
            guard let bytes = buffer.readBytes(length: 2) else { return .needMoreData }
            guard bytes[1] == 0 else { return fail(.generalFailure, "the upstream refused the credentials") }
            return request()
        case .awaitingReply:
            do {
                guard let reply = try buffer.readSOCKSReply() else { return .needMoreData }
                state = .done
                guard reply.code == .succeeded else { return .failed(reply.code, "the upstream replied \(reply.code)") }
                return .established(bound: reply.bound)
            } catch {
                return fail(.generalFailure, "the upstream's reply is not SOCKS5: \(error)")
            }
        case .done:
            return .needMoreData
        }
    }

    private mutating func request() -> Step {
        state = .awaitingReply
        var request = ByteBuffer()
        request.writeSOCKSRequest(SOCKSRequest(command: .connect, destination: destination))
        return .send(request)
    }

    private mutating func fail(_ code: SOCKSReplyCode, _ reason: String) -> Step {
        state = .done
        return .failed(code, reason)
    }
}

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
    /// Reads what the upstream sent so far: the next step.
    mutating func advance(_ buffer: inout ByteBuffer) -> UpstreamStep
}

extension SOCKS5ClientHandshake: UpstreamHandshaking {
    public func opening() -> ByteBuffer { greeting() }

    public mutating func advance(_ buffer: inout ByteBuffer) -> UpstreamStep {
        switch process(&buffer) {
        case .send(let bytes): return .send(bytes)
        case .needMoreData: return .needMoreData
        case .established: return .established
        case .failed(let code, let reason): return .failed(code, reason)
        }
    }
}
