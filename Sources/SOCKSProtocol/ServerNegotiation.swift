import NIOCore

/// The server side of a SOCKS5 negotiation, as a value: bytes and outcomes go in, actions come out.
///
/// It never touches a channel. The caller keeps one inbound buffer, hands it to `process(_:)` until
/// the answer is `.needMoreData` or `.wait`, and carries out each action. Messages are read by length,
/// so a greeting, credentials, a request and payload that arrive in one segment, or one byte at a
/// time, take the same path. Bytes left in the buffer once the machine reports `.established` are the
/// client's first payload.
public struct ServerNegotiation: Sendable {
    /// What the server is willing to do.
    public struct Configuration: Hashable, Sendable {
        /// The methods this listener offers, most preferred first.
        public var methods: [AuthenticationMethod]
        /// The commands served; others get reply `0x07`.
        public var commands: Set<SOCKSCommand>
        /// How many bytes a client may send ahead of its answer (while authenticating or while the
        /// request is carried out) before it is closed.
        public var maximumEarlyData: Int
        /// Serve SOCKS4 and SOCKS4a too (the first byte of a connection picks the version): CONNECT,
        /// and BIND when `commands` holds it.
        /// Such sessions carry no password: they are anonymous.
        public var socks4: Bool

        public init(methods: [AuthenticationMethod], commands: Set<SOCKSCommand>, maximumEarlyData: Int, socks4: Bool = false) {
            self.methods = methods
            self.commands = commands
            self.maximumEarlyData = maximumEarlyData
            self.socks4 = socks4
        }
    }

    /// Why a negotiation ended without a relay.
    public enum Failure: Hashable, Sendable {
        case protocolError(SOCKSProtocolError)
        case noAcceptableMethod
        case authenticationFailed
        case commandNotSupported(SOCKSCommand)
        case requestFailed(SOCKSReplyCode)
        case earlyDataLimitExceeded
        case clientClosed
    }

    /// What the caller is to do next.
    public enum Action: Sendable {
        /// Wait for more bytes from the client.
        case needMoreData
        /// Wait for the outcome of the authentication or the request asked for earlier.
        case wait
        /// Write these bytes, then call `process(_:)` again.
        case send(ByteBuffer)
        /// Write these bytes, then close the connection. `reply` is the SOCKS reply code the bytes
        /// carry, when they are a request reply (not a method or RFC 1929 answer).
        case sendAndClose(ByteBuffer, Failure, reply: SOCKSReplyCode?)
        /// Close the connection without a word.
        case close(Failure)
        /// Check these credentials, then call `authenticationCompleted(success:)`.
        case authenticate(UsernamePasswordRequest)
        /// Carry out this request, then call `requestSucceeded(bound:)` or `requestFailed(_:)` (a BIND
        /// calls `listening(bound:)` first, once its socket listens).
        case execute(SOCKSRequest)
        /// Write this success reply and start relaying; what is left in the buffer is payload.
        case established(ByteBuffer)
    }

    enum State: Sendable {
        case awaitingGreeting
        case awaitingCredentials
        case authenticating
        case awaitingRequest
        case executing(SOCKSRequest)
        /// A BIND's first reply is sent: its peer has yet to connect.
        case awaitingPeer
        case established
        case closed
    }

    public let configuration: Configuration
    private(set) var state: State = .awaitingGreeting
    /// The client speaks SOCKS4 (or 4a): replies are SOCKS4's.
    public private(set) var isSOCKS4 = false
    /// The SOCKS4 client's user id, once its request is read: logged, never trusted.
    public private(set) var socks4UserID: [UInt8]?

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// True once the negotiation is over, successfully or not.
    public var isFinished: Bool {
        switch state {
        case .established, .closed: return true
        default: return false
        }
    }

    /// Parses the next message from `buffer`, if the state expects one and it is all there.
    public mutating func process(_ buffer: inout ByteBuffer) -> Action {
        do {
            switch state {
            case .awaitingGreeting:
                if buffer.readableBytesView.first == 0x04 {
                    guard configuration.socks4 else { return protocolFailure(.socks4NotEnabled) }
                    isSOCKS4 = true
                    guard let request = try buffer.readSOCKS4Request() else { return .needMoreData }
                    socks4UserID = request.userID
                    guard request.command == .connect || request.command == .bind, configuration.commands.contains(request.command) else {
                        return fail(.commandNotSupported(request.command), reply: .commandNotSupported)
                    }
                    let socks5 = SOCKSRequest(command: request.command, destination: request.destination)
                    state = .executing(socks5)
                    return .execute(socks5)
                }
                guard let greeting = try buffer.readClientGreeting() else { return .needMoreData }
                return chooseMethod(from: greeting)
            case .awaitingCredentials:
                guard let credentials = try buffer.readUsernamePasswordRequest() else { return .needMoreData }
                state = .authenticating
                return .authenticate(credentials)
            case .awaitingRequest:
                guard let request = try buffer.readSOCKSRequest() else { return .needMoreData }
                guard configuration.commands.contains(request.command) else {
                    return fail(.commandNotSupported(request.command), reply: .commandNotSupported)
                }
                state = .executing(request)
                return .execute(request)
            case .authenticating, .executing, .awaitingPeer:
                guard buffer.readableBytes <= configuration.maximumEarlyData else {
                    state = .closed
                    return .close(.earlyDataLimitExceeded)
                }
                return .wait
            case .established, .closed:
                return .wait
            }
        } catch {
            return protocolFailure(error)
        }
    }

    /// Room for any reply (a SOCKS5 reply with a 255-byte name is 262 bytes; the others are
    /// short) in one allocation, not grown write by write.
    static func replyBuffer() -> ByteBuffer {
        ByteBufferAllocator().buffer(capacity: 24)
    }

    /// The authenticator's answer to the `.authenticate` action.
    public mutating func authenticationCompleted(success: Bool) -> Action {
        // An answer that arrives after the negotiation ended (the client flooded or left) is moot.
        guard case .authenticating = state else { return .wait }
        var reply = Self.replyBuffer()
        if success {
            state = .awaitingRequest
            reply.writeUsernamePasswordReply(.success)
            return .send(reply)
        }
        state = .closed
        reply.writeUsernamePasswordReply(.failure)
        return .sendAndClose(reply, .authenticationFailed, reply: nil)
    }

    /// A BIND's socket listens at `bound`: the first of its two replies. The second comes with
    /// `requestSucceeded(bound:)` (the peer's address) or `requestFailed(_:)`.
    public mutating func listening(bound: SOCKSEndpoint) -> Action {
        guard case .executing(let request) = state, request.command == .bind else { return .wait }
        state = .awaitingPeer
        return .send(successReply(bound: bound))
    }

    /// The request was carried out; `bound` is the address to report as `BND` (for a BIND, the
    /// peer that connected).
    public mutating func requestSucceeded(bound: SOCKSEndpoint) -> Action {
        switch state {
        case .executing(let request) where request.command != .bind: break
        case .awaitingPeer: break
        default: return .wait
        }
        state = .established
        return .established(successReply(bound: bound))
    }

    private func successReply(bound: SOCKSEndpoint) -> ByteBuffer {
        var reply = Self.replyBuffer()
        if isSOCKS4 {
            reply.writeSOCKS4Reply(.granted, bound: bound)
        } else {
            reply.writeSOCKSReply(SOCKSReply(code: .succeeded, bound: bound))
        }
        return reply
    }

    /// The request failed or was refused with this reply code.
    public mutating func requestFailed(_ code: SOCKSReplyCode) -> Action {
        switch state {
        case .executing, .awaitingPeer: break
        default: return .wait
        }
        return fail(.requestFailed(code), reply: code)
    }

    /// The client sent EOF. Before the request is complete that ends the negotiation, and so does
    /// it while a BIND waits for its peer (nobody would be left to relay to); after a request, the
    /// request goes on (the EOF is the caller's to pass on once relaying).
    public mutating func inputClosed() -> Action {
        switch state {
        case .awaitingGreeting, .awaitingCredentials, .awaitingRequest, .authenticating, .awaitingPeer:
            state = .closed
            return .close(.clientClosed)
        case .executing, .established, .closed:
            return .wait
        }
    }

    private mutating func chooseMethod(from greeting: ClientGreeting) -> Action {
        var reply = Self.replyBuffer()
        var chosen: AuthenticationMethod?
        for method in configuration.methods where greeting.methods.contains(method) {
            chosen = method
            break
        }
        guard let chosen else {
            state = .closed
            reply.writeMethodSelection(MethodSelection(method: .noAcceptableMethods))
            return .sendAndClose(reply, .noAcceptableMethod, reply: nil)
        }
        state = chosen == .usernamePassword ? .awaitingCredentials : .awaitingRequest
        reply.writeMethodSelection(MethodSelection(method: chosen))
        return .send(reply)
    }

    /// Refuses with `code` (SOCKS4 knows only "rejected"); `reply:` keeps the SOCKS5 code for the log.
    private mutating func fail(_ failure: Failure, reply code: SOCKSReplyCode) -> Action {
        state = .closed
        var reply = Self.replyBuffer()
        if isSOCKS4 {
            reply.writeSOCKS4Reply(.rejected)
        } else {
            reply.writeSOCKSReply(SOCKSReply(code: code))
        }
        return .sendAndClose(reply, failure, reply: code)
    }

    private mutating func protocolFailure(_ error: SOCKSProtocolError) -> Action {
        switch (state, error) {
        case (.awaitingCredentials, .invalidCredentials):
            state = .closed
            var reply = Self.replyBuffer()
            reply.writeUsernamePasswordReply(.failure)
            return .sendAndClose(reply, .protocolError(error), reply: nil)
        case (.awaitingRequest, .unsupportedAddressType):
            return fail(.protocolError(error), reply: .addressTypeNotSupported)
        case (.awaitingRequest, .invalidDomainName):
            return fail(.protocolError(error), reply: .generalFailure)
        case (.awaitingGreeting, .invalidDomainName), (.awaitingGreeting, .fieldTooLong):
            // A SOCKS4a request whose name or user id cannot be taken.
            return fail(.protocolError(error), reply: .generalFailure)
        default:
            state = .closed
            return .close(.protocolError(error))
        }
    }
}
