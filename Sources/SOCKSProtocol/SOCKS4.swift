import NIOCore

/// A SOCKS4 or SOCKS4a request: `VN=4 CD DSTPORT DSTIP USERID NUL [HOSTNAME NUL]`. SOCKS4a marks a
/// name with a `DSTIP` of 0.0.0.x (x not 0) and sends the name after the user id.
public struct SOCKS4Request: Hashable, Sendable {
    /// `CD`: 1 CONNECT, 2 BIND.
    public var command: SOCKSCommand
    public var destination: SOCKSEndpoint
    /// What the client says of itself, unchecked (SOCKS4 carries no password).
    public var userID: [UInt8]

    public init(command: SOCKSCommand, destination: SOCKSEndpoint, userID: [UInt8]) {
        self.command = command
        self.destination = destination
        self.userID = userID
    }

    /// The longest user id and host name taken (the protocol sets no limit; a name longer than a
    /// SOCKS5 or DNS name is no name).
    public static let maximumField = 255
}

/// SOCKS4's reply codes (`CD` of the reply).
public enum SOCKS4ReplyCode: UInt8, Hashable, Sendable {
    case granted = 0x5A
    case rejected = 0x5B
}

extension ByteBuffer {
    /// Reads a SOCKS4/4a request. Returns nil, consuming nothing, when it is not all there yet;
    /// throws when the version is not 4, or the user id or the name is too long, or the name is
    /// not a DNS name.
    public mutating func readSOCKS4Request() throws(SOCKSProtocolError) -> SOCKS4Request? {
        var copy = self
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == 0x04 else { throw .invalidVersion(version) }
        guard let command = copy.readInteger(as: UInt8.self), let port = copy.readInteger(as: UInt16.self),
            let address = copy.readInteger(as: UInt32.self)
        else { return nil }
        guard let userID = try copy.readNULTerminated(maximum: SOCKS4Request.maximumField) else { return nil }
        let host: SOCKSHost
        if address & 0xFFFF_FF00 == 0, address != 0 {
            guard let name = try copy.readNULTerminated(maximum: SOCKS4Request.maximumField) else { return nil }
            guard let named = DestinationName.host(fromWire: name) else { throw .invalidDomainName }
            host = named
        } else {
            host = .ipv4(SOCKSIPv4Address(address))
        }
        self = copy
        return SOCKS4Request(command: SOCKSCommand(rawValue: command), destination: SOCKSEndpoint(host: host, port: port), userID: userID)
    }

    /// The bytes up to a NUL, which is consumed; nil when the NUL has not come yet.
    private mutating func readNULTerminated(maximum: Int) throws(SOCKSProtocolError) -> [UInt8]? {
        let view = readableBytesView
        guard let end = view.firstIndex(of: 0) else {
            if view.count > maximum { throw .fieldTooLong }
            return nil
        }
        let length = end - view.startIndex
        guard length <= maximum else { throw .fieldTooLong }
        let bytes = readBytes(length: length)
        moveReaderIndex(forwardBy: 1)
        return bytes
    }

    /// Writes a SOCKS4 reply: `VN=0 CD DSTPORT DSTIP` (the bound IPv4 address when there is one).
    @discardableResult
    public mutating func writeSOCKS4Reply(_ code: SOCKS4ReplyCode, bound: SOCKSEndpoint = .unspecified) -> Int {
        // An IPv6 address does not fit: 0.0.0.0 tells the client to use the server's own address
        // (SOCKS4's rule for a BIND reply), with the port still given.
        var address: UInt32 = 0
        let port = bound.port
        if case .ipv4(let ipv4) = bound.host { address = ipv4.value }
        return writeInteger(UInt8(0)) + writeInteger(code.rawValue) + writeInteger(port) + writeInteger(address)
    }

    /// Writes a SOCKS4 (or, for a name, 4a) request (used by tests).
    @discardableResult
    public mutating func writeSOCKS4Request(_ request: SOCKS4Request) -> Int {
        var written = writeInteger(UInt8(4)) + writeInteger(request.command.rawValue) + writeInteger(request.destination.port)
        switch request.destination.host {
        case .ipv4(let address): written += writeInteger(address.value)
        default: written += writeInteger(UInt32(1))
        }
        written += writeBytes(request.userID) + writeInteger(UInt8(0))
        if case .domain(let name) = request.destination.host {
            written += writeBytes(Array(name.utf8)) + writeInteger(UInt8(0))
        }
        return written
    }
}
