import NIOCore

/// A SOCKS5 command (`CMD`).
public struct SOCKSCommand: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let connect = SOCKSCommand(rawValue: 0x01)
    public static let bind = SOCKSCommand(rawValue: 0x02)
    public static let udpAssociate = SOCKSCommand(rawValue: 0x03)
}

extension SOCKSCommand: CustomStringConvertible {
    public var description: String {
        switch self {
        case .connect: return "connect"
        case .bind: return "bind"
        case .udpAssociate: return "udp"
        default: return "cmd-\(rawValue)"
        }
    }
}

/// The client's request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
public struct SOCKSRequest: Hashable, Sendable {
    public var command: SOCKSCommand
    public var destination: SOCKSEndpoint

    public init(command: SOCKSCommand, destination: SOCKSEndpoint) {
        self.command = command
        self.destination = destination
    }
}

extension ByteBuffer {
    /// Reads a request. Returns nil, consuming nothing, when it is not all there yet. Any command
    /// number is returned: which ones are served is the negotiation's business. `RSV` is not checked,
    /// as no client relies on it and some send garbage there.
    public mutating func readSOCKSRequest() throws(SOCKSProtocolError) -> SOCKSRequest? {
        var copy = self
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == 0x05 else { throw .invalidVersion(version) }
        guard let command = copy.readInteger(as: UInt8.self), copy.readInteger(as: UInt8.self) != nil,
            let destination = try copy.readSOCKSEndpoint()
        else { return nil }
        self = copy
        return SOCKSRequest(command: SOCKSCommand(rawValue: command), destination: destination)
    }

    /// Writes a request (used by clients and tests).
    @discardableResult
    public mutating func writeSOCKSRequest(_ request: SOCKSRequest) -> Int {
        writeInteger(UInt8(0x05)) + writeInteger(request.command.rawValue) + writeInteger(UInt8(0))
            + writeSOCKSEndpoint(request.destination)
    }
}

/// A reply code (`REP`).
public struct SOCKSReplyCode: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let succeeded = SOCKSReplyCode(rawValue: 0x00)
    public static let generalFailure = SOCKSReplyCode(rawValue: 0x01)
    public static let notAllowed = SOCKSReplyCode(rawValue: 0x02)
    public static let networkUnreachable = SOCKSReplyCode(rawValue: 0x03)
    public static let hostUnreachable = SOCKSReplyCode(rawValue: 0x04)
    public static let connectionRefused = SOCKSReplyCode(rawValue: 0x05)
    public static let ttlExpired = SOCKSReplyCode(rawValue: 0x06)
    public static let commandNotSupported = SOCKSReplyCode(rawValue: 0x07)
    public static let addressTypeNotSupported = SOCKSReplyCode(rawValue: 0x08)
}

extension SOCKSReplyCode: CustomStringConvertible {
    public var description: String {
        switch self {
        case .succeeded: return "succeeded"
        case .generalFailure: return "general-failure"
        case .notAllowed: return "not-allowed"
        case .networkUnreachable: return "network-unreachable"
        case .hostUnreachable: return "host-unreachable"
        case .connectionRefused: return "connection-refused"
        case .ttlExpired: return "ttl-expired"
        case .commandNotSupported: return "command-not-supported"
        case .addressTypeNotSupported: return "address-type-not-supported"
        default: return "reply-\(rawValue)"
        }
    }
}

/// The server's reply: `VER REP RSV ATYP BND.ADDR BND.PORT`.
public struct SOCKSReply: Hashable, Sendable {
    public var code: SOCKSReplyCode
    public var bound: SOCKSEndpoint

    public init(code: SOCKSReplyCode, bound: SOCKSEndpoint = .unspecified) {
        self.code = code
        self.bound = bound
    }
}

extension ByteBuffer {
    /// Writes a reply.
    @discardableResult
    public mutating func writeSOCKSReply(_ reply: SOCKSReply) -> Int {
        writeInteger(UInt8(0x05)) + writeInteger(reply.code.rawValue) + writeInteger(UInt8(0))
            + writeSOCKSEndpoint(reply.bound)
    }

    /// Reads a reply (used by clients and tests). Returns nil, consuming nothing, when it is not all
    /// there yet.
    public mutating func readSOCKSReply() throws(SOCKSProtocolError) -> SOCKSReply? {
        var copy = self
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == 0x05 else { throw .invalidVersion(version) }
        guard let code = copy.readInteger(as: UInt8.self), copy.readInteger(as: UInt8.self) != nil,
            let bound = try copy.readSOCKSEndpoint()
        else { return nil }
        self = copy
        return SOCKSReply(code: SOCKSReplyCode(rawValue: code), bound: bound)
    }
}
