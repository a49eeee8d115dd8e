import NIOCore

/// The header of a UDP datagram relayed through an association (RFC 1928 section 7):
/// `RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT`, followed by the data.
public struct UDPDatagramHeader: Hashable, Sendable {
    /// The fragment number; 0 for a whole datagram. Sallyport does not reassemble: any other value
    /// means the datagram is dropped.
    public var fragment: UInt8
    /// Where the datagram goes (client to server) or where it came from (server to client).
    public var endpoint: SOCKSEndpoint

    public init(fragment: UInt8 = 0, endpoint: SOCKSEndpoint) {
        self.fragment = fragment
        self.endpoint = endpoint
    }
}

/// Why a datagram's header cannot be used.
public enum UDPDatagramError: Error, Hashable, Sendable {
    /// The datagram ends inside its header.
    case truncated
    /// The address inside the header is malformed.
    case badAddress(SOCKSProtocolError)
}

extension ByteBuffer {
    /// Reads the header of a whole datagram; what is left in the buffer is the data. A datagram is
    /// never continued, so a short one is an error, not a wait.
    public mutating func readUDPDatagramHeader() throws(UDPDatagramError) -> UDPDatagramHeader {
        var copy = self
        guard copy.readInteger(as: UInt16.self) != nil, let fragment = copy.readInteger(as: UInt8.self) else {
            throw .truncated
        }
        let endpoint: SOCKSEndpoint?
        do {
            endpoint = try copy.readSOCKSEndpoint()
        } catch {
            throw .badAddress(error)
        }
        guard let endpoint else { throw .truncated }
        self = copy
        return UDPDatagramHeader(fragment: fragment, endpoint: endpoint)
    }

    /// Writes a datagram header; the data follows.
    @discardableResult
    public mutating func writeUDPDatagramHeader(_ header: UDPDatagramHeader) -> Int {
        writeInteger(UInt16(0)) + writeInteger(header.fragment) + writeSOCKSEndpoint(header.endpoint)
    }
}
