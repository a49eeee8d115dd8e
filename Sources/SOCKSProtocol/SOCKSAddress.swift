import NIOCore

/// An IPv4 address as it travels in a SOCKS message (four bytes, network order).
public struct SOCKSIPv4Address: Hashable, Sendable {
    /// The address as a big-endian integer: `1.2.3.4` is `0x01020304`.
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        self.value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// The four bytes in network order.
    public var bytes: [UInt8] {
        [UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
         UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)]
    }

    /// `0.0.0.0`, the address put in failure replies.
    public static let any = SOCKSIPv4Address(0)
}

extension SOCKSIPv4Address: CustomStringConvertible {
    public var description: String { AddressText.ipv4(value) }
}

/// An IPv6 address as it travels in a SOCKS message (sixteen bytes, network order).
public struct SOCKSIPv6Address: Hashable, Sendable {
    /// The first eight bytes, big-endian.
    public var high: UInt64
    /// The last eight bytes, big-endian.
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Builds an address from exactly sixteen bytes in network order.
    public init<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        precondition(bytes.count == 16, "an IPv6 address is 16 bytes")
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.init(high: high, low: low)
    }

    /// The sixteen bytes in network order.
    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
    }

    /// The eight 16-bit groups of the address.
    var groups: [UInt16] {
        (0..<4).map { UInt16(truncatingIfNeeded: high >> (48 - 16 * $0)) }
            + (0..<4).map { UInt16(truncatingIfNeeded: low >> (48 - 16 * $0)) }
    }
}

extension SOCKSIPv6Address: CustomStringConvertible {
    /// The RFC 5952 text form: lower case, longest run of zero groups shortened to `::`,
    /// IPv4-mapped addresses as `::ffff:a.b.c.d`.
    public var description: String {
        if high == 0, low >> 32 == 0xFFFF {
            return "::ffff:" + SOCKSIPv4Address(UInt32(truncatingIfNeeded: low)).description
        }
        let groups = self.groups
        var bestStart = -1
        var bestLength = 0
        var index = 0
        while index < groups.count {
            guard groups[index] == 0 else {
                index += 1
                continue
            }
            var end = index
            while end < groups.count, groups[end] == 0 { end += 1 }
            if end - index > bestLength {
                bestStart = index
                bestLength = end - index
            }
            index = end
        }
        func hex(_ slice: ArraySlice<UInt16>) -> String {
            slice.map { String($0, radix: 16) }.joined(separator: ":")
        }
        guard bestLength >= 2 else { return hex(groups[...]) }
        return hex(groups[..<bestStart]) + "::" + hex(groups[(bestStart + bestLength)...])
    }
}

/// The host part of a SOCKS address: `ATYP` and `DST.ADDR`/`BND.ADDR`.
public enum SOCKSHost: Hashable, Sendable {
    case ipv4(SOCKSIPv4Address)
    case ipv6(SOCKSIPv6Address)
    /// A DNS name in `DestinationName`'s normalized form, to be resolved by the server.
    case domain(String)

    /// The `ATYP` byte for this host.
    public var addressType: UInt8 {
        switch self {
        case .ipv4: return 0x01
        case .domain: return 0x03
        case .ipv6: return 0x04
        }
    }
}

extension SOCKSHost: CustomStringConvertible {
    public var description: String {
        switch self {
        case .ipv4(let address): return address.description
        case .ipv6(let address): return address.description
        case .domain(let name): return name
        }
    }
}

/// A host and a port, as in `DST.ADDR`/`DST.PORT` and `BND.ADDR`/`BND.PORT`.
public struct SOCKSEndpoint: Hashable, Sendable {
    public var host: SOCKSHost
    public var port: UInt16

    public init(host: SOCKSHost, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// `0.0.0.0:0`, the address put in failure replies.
    public static let unspecified = SOCKSEndpoint(host: .ipv4(.any), port: 0)
}

extension SOCKSEndpoint: CustomStringConvertible {
    /// `host:port`, with an IPv6 host in brackets.
    public var description: String { AddressText.endpoint(host, port: Int(port)) }
}

extension ByteBuffer {
    /// Reads `ATYP`, the address and the port. Returns nil, consuming nothing, when the bytes are not
    /// all there yet.
    mutating func readSOCKSEndpoint() throws(SOCKSProtocolError) -> SOCKSEndpoint? {
        var copy = self
        guard let addressType = copy.readInteger(as: UInt8.self) else { return nil }
        let host: SOCKSHost
        switch addressType {
        case 0x01:
            guard let value = copy.readInteger(as: UInt32.self) else { return nil }
            host = .ipv4(SOCKSIPv4Address(value))
        case 0x04:
            guard let high = copy.readInteger(as: UInt64.self), let low = copy.readInteger(as: UInt64.self)
            else { return nil }
            host = .ipv6(SOCKSIPv6Address(high: high, low: low))
        case 0x03:
            guard let length = copy.readInteger(as: UInt8.self) else { return nil }
            guard length > 0 else { throw .invalidDomainName }
            guard let bytes = copy.readSlice(length: Int(length)) else { return nil }
            // A name is taken as a DNS name (or the address it spells) or not at all.
            guard let named = DestinationName.host(fromWire: bytes.readableBytesView) else { throw .invalidDomainName }
            host = named
        default:
            throw .unsupportedAddressType(addressType)
        }
        guard let port = copy.readInteger(as: UInt16.self) else { return nil }
        self = copy
        return SOCKSEndpoint(host: host, port: port)
    }

    /// Writes `ATYP`, the address and the port; returns the number of bytes written.
    @discardableResult
    mutating func writeSOCKSEndpoint(_ endpoint: SOCKSEndpoint) -> Int {
        var written = writeInteger(endpoint.host.addressType)
        switch endpoint.host {
        case .ipv4(let address):
            written += writeInteger(address.value)
        case .ipv6(let address):
            written += writeInteger(address.high)
            written += writeInteger(address.low)
        case .domain(let name):
            // Names longer than the wire allows are cut, never sent with a wrong length byte.
            let bytes = Array(name.utf8.prefix(255))
            written += writeInteger(UInt8(bytes.count))
            written += writeBytes(bytes)
        }
        written += writeInteger(endpoint.port)
        return written
    }
}
