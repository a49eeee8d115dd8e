import NIOCore

/// Which PROXY protocol header a listener expects in front of the SOCKS greeting.
public enum ProxyProtocolVersion: String, Sendable, Hashable, CaseIterable {
    case v1, v2, any
}

/// A PROXY protocol header (HAProxy's, versions 1 and 2): who the balancer's client was.
public struct ProxyHeader: Sendable, Hashable {
    /// The client's address and port, as the balancer saw it; nil for LOCAL (v2: the balancer's
    /// own connection, as a health check) and for v1 UNKNOWN.
    public var source: SOCKSEndpoint?
    /// The address the client connected to.
    public var destination: SOCKSEndpoint?

    public init(source: SOCKSEndpoint?, destination: SOCKSEndpoint?) {
        self.source = source
        self.destination = destination
    }

    /// A connection the balancer makes for itself (v2 LOCAL, v1 UNKNOWN): no client behind it.
    public var isLocal: Bool { source == nil }
}

/// Why a PROXY header was refused.
public enum ProxyHeaderError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The connection does not start with a header of an expected version.
    case missing
    case malformed(String)

    public var description: String {
        switch self {
        case .missing: return "no PROXY protocol header"
        case .malformed(let why): return "malformed PROXY protocol header: \(why)"
        }
    }
}

extension ProxyHeader {
    /// v2's 12-byte signature.
    public static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let v1Prefix = Array("PROXY ".utf8)
    /// The longest v1 line, CRLF included (the specification's limit).
    static let v1MaximumLength = 107
}

extension ByteBuffer {
    /// Reads a PROXY protocol header of `version`. Returns nil, consuming nothing, while it is not
    /// all there; throws as soon as the bytes cannot begin one (so a client that sends SOCKS
    /// straight away is told at once, not after a timeout).
    public mutating func readProxyHeader(_ version: ProxyProtocolVersion) throws(ProxyHeaderError) -> ProxyHeader? {
        let available = readableBytesView
        let checked = Swift.min(available.count, 12)
        let mayBeV2 = version != .v1 && available.prefix(checked).elementsEqual(ProxyHeader.signature.prefix(checked))
        let v1Checked = Swift.min(available.count, ProxyHeader.v1Prefix.count)
        let mayBeV1 = version != .v2 && available.prefix(v1Checked).elementsEqual(ProxyHeader.v1Prefix.prefix(v1Checked))
        if mayBeV2, available.count >= 12 { return try readProxyHeaderV2() }
        if mayBeV1, available.count >= ProxyHeader.v1Prefix.count { return try readProxyHeaderV1() }
        guard mayBeV1 || mayBeV2 else { throw .missing }
        return nil
    }

    private mutating func readProxyHeaderV1() throws(ProxyHeaderError) -> ProxyHeader? {
        let view = readableBytesView
        guard let newline = view.prefix(ProxyHeader.v1MaximumLength).firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count >= ProxyHeader.v1MaximumLength { throw .malformed("no line end within 107 bytes") }
            return nil
        }
        let length = newline - view.startIndex + 1
        guard length >= 2, view[newline - 1] == UInt8(ascii: "\r") else { throw .malformed("the line must end in CRLF") }
        let line = String(decoding: view.prefix(length - 2), as: UTF8.self)
        let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        let header: ProxyHeader
        switch fields.count >= 2 ? fields[1] : "" {
        case "UNKNOWN":
            header = ProxyHeader(source: nil, destination: nil)
        case "TCP4", "TCP6":
            guard fields.count == 6 else { throw .malformed("expected PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT") }
            let v6 = fields[1] == "TCP6"
            guard let source = IPAddress(fields[2]), let destination = IPAddress(fields[3]),
                Self.isV6(source) == v6, Self.isV6(destination) == v6,
                let sourcePort = Self.port(fields[4]), let destinationPort = Self.port(fields[5])
            else { throw .malformed("bad addresses or ports for \(fields[1])") }
            header = ProxyHeader(
                source: SOCKSEndpoint(host: source.socksHost, port: sourcePort),
                destination: SOCKSEndpoint(host: destination.socksHost, port: destinationPort))
        default:
            throw .malformed("unknown protocol '\(fields.count >= 2 ? fields[1] : "")'; expected TCP4, TCP6 or UNKNOWN")
        }
        moveReaderIndex(forwardBy: length)
        return header
    }

    private static func isV6(_ address: IPAddress) -> Bool {
        if case .v6 = address { return true }
        return false
    }

    /// A port as v1 writes it: decimal, no sign or leading zero, 0 to 65535.
    private static func port(_ text: String) -> UInt16? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy(\.isASCII), text.allSatisfy(\.isNumber),
            text == "0" || !text.hasPrefix("0")
        else { return nil }
        return UInt16(text)
    }

    private mutating func readProxyHeaderV2() throws(ProxyHeaderError) -> ProxyHeader? {
        guard readableBytes >= 16 else { return nil }
        let view = readableBytesView
        let start = view.startIndex
        let versionAndCommand = view[start + 12]
        guard versionAndCommand >> 4 == 2 else { throw .malformed("version \(versionAndCommand >> 4), expected 2") }
        let command = versionAndCommand & 0x0F
        guard command <= 1 else { throw .malformed("unknown command \(command)") }
        let family = view[start + 13]
        let length = Int(view[start + 14]) << 8 | Int(view[start + 15])
        guard readableBytes >= 16 + length else { return nil }
        let body = Array(view[(start + 16)..<(start + 16 + length)])
        var header = ProxyHeader(source: nil, destination: nil)
        if command == 1 {
            switch family {
            case 0x11, 0x12:  // TCP or UDP over IPv4
                guard body.count >= 12 else { throw .malformed("an IPv4 address block needs 12 bytes, got \(body.count)") }
                header.source = SOCKSEndpoint(host: .ipv4(SOCKSIPv4Address(body[0], body[1], body[2], body[3])), port: UInt16(body[8]) << 8 | UInt16(body[9]))
                header.destination = SOCKSEndpoint(host: .ipv4(SOCKSIPv4Address(body[4], body[5], body[6], body[7])), port: UInt16(body[10]) << 8 | UInt16(body[11]))
            case 0x21, 0x22:  // TCP or UDP over IPv6
                guard body.count >= 36 else { throw .malformed("an IPv6 address block needs 36 bytes, got \(body.count)") }
                header.source = SOCKSEndpoint(host: .ipv6(SOCKSIPv6Address(bytes: body[0..<16])), port: UInt16(body[32]) << 8 | UInt16(body[33]))
                header.destination = SOCKSEndpoint(host: .ipv6(SOCKSIPv6Address(bytes: body[16..<32])), port: UInt16(body[34]) << 8 | UInt16(body[35]))
            case 0x00:  // UNSPEC: no address to give
                break
            default:
                throw .malformed("address family \(family) is not TCP or UDP over IPv4 or IPv6")
            }
        }
        moveReaderIndex(forwardBy: 16 + length)
        return header
    }
}
