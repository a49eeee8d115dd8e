import NIOCore

#if canImport(Glibc)
import Glibc
#endif

// The one place where addresses change form: NIO's `SocketAddress`, our `IPAddress`, the wire's
// `SOCKSEndpoint` and the text the logs show. None of these conversions allocates for an IP.

extension IPAddress {
    /// Parses a textual address (`192.0.2.1`, `2001:db8::1`, `::ffff:10.0.0.1`).
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(SOCKSIPv4Address(UInt32(bigEndian: v4.s_addr)))
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self = .v6(SOCKSIPv6Address(bytes: withUnsafeBytes(of: v6) { Array($0) }))
            return
        }
        return nil
    }

    /// The IP of a socket address; nil for a Unix socket.
    public init?(_ address: SocketAddress) {
        switch address {
        case .v4(let v4):
            self = .v4(SOCKSIPv4Address(UInt32(bigEndian: v4.address.sin_addr.s_addr)))
        case .v6(let v6):
            let (high, low) = withUnsafeBytes(of: v6.address.sin6_addr) { raw in
                (UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                 UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
            }
            self = .v6(SOCKSIPv6Address(high: high, low: low))
        default:
            return nil
        }
    }

    /// The IP of a `sockaddr` from the C library (as `getaddrinfo` gives); nil for other families.
    public init?(_ raw: UnsafePointer<sockaddr>) {
        switch Int32(raw.pointee.sa_family) {
        case AF_INET:
            let v4 = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
            self.init(SocketAddress(v4, host: ""))
        case AF_INET6:
            let v6 = raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
            self.init(SocketAddress(v6, host: ""))
        default:
            return nil
        }
    }

    /// The IP of a wire host; nil for a name.
    public init?(_ host: SOCKSHost) {
        switch host {
        case .ipv4(let address): self = .v4(address)
        case .ipv6(let address): self = .v6(address)
        case .domain: return nil
        }
    }

    /// The socket address of this IP and `port`.
    public func socketAddress(port: Int) -> SocketAddress {
        let networkPort = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        switch self {
        case .v4(let address):
            var raw = sockaddr_in()
            raw.sin_family = sa_family_t(AF_INET)
            raw.sin_port = networkPort
            raw.sin_addr.s_addr = address.value.bigEndian
            return SocketAddress(raw, host: "")
        case .v6(let address):
            var raw = sockaddr_in6()
            raw.sin6_family = sa_family_t(AF_INET6)
            raw.sin6_port = networkPort
            withUnsafeMutableBytes(of: &raw.sin6_addr) { bytes in
                bytes.storeBytes(of: address.high.bigEndian, toByteOffset: 0, as: UInt64.self)
                bytes.storeBytes(of: address.low.bigEndian, toByteOffset: 8, as: UInt64.self)
            }
            return SocketAddress(raw, host: "")
        }
    }

    /// The wire host of this IP.
    public var socksHost: SOCKSHost {
        switch self {
        case .v4(let address): return .ipv4(address)
        case .v6(let address): return .ipv6(address)
        }
    }

    /// True for 127.0.0.0/8 and ::1, in IPv4-mapped form too.
    public var isLoopback: Bool {
        switch unmapped {
        case .v4(let address): return address.value >> 24 == 127
        case .v6(let address): return address.high == 0 && address.low == 1
        }
    }
}

extension IPAddress: CustomStringConvertible {
    public var description: String {
        switch self {
        case .v4(let address): return address.description
        case .v6(let address): return address.description
        }
    }
}

/// Who a client is, for shares and throttling: its IPv4 address, or the /64 of its IPv6 address
/// (one host commonly holds a whole /64 and may change addresses in it at will). IPv4-mapped
/// addresses count as the IPv4 address.
public struct ClientNetwork: Hashable, Sendable, CustomStringConvertible {
    private let address: IPAddress?

    public init(_ address: IPAddress?) {
        switch address?.unmapped {
        case .v6(let v6): self.address = .v6(SOCKSIPv6Address(high: v6.high, low: 0))
        case let other: self.address = other
        }
    }

    public init(_ address: SocketAddress?) {
        self.init(address.flatMap(IPAddress.init))
    }

    /// `192.0.2.1`, `2001:db8::/64`, or `unknown` for a client without an IP.
    public var description: String {
        switch address {
        case .v4(let v4): return v4.description
        case .v6(let v6): return "\(v6)/64"
        case nil: return "unknown"
        }
    }
}

extension SOCKSEndpoint {
    /// The endpoint of a socket address, as an IP (never a name); `unspecified` for a Unix socket.
    public init(_ address: SocketAddress) {
        guard let ip = IPAddress(address) else {
            self = .unspecified
            return
        }
        self.init(host: ip.socksHost, port: UInt16(clamping: address.port ?? 0))
    }

    /// The socket address of an IP endpoint; nil for a name.
    public var socketAddress: SocketAddress? {
        IPAddress(host).map { $0.socketAddress(port: Int(port)) }
    }
}

extension SocketAddress {
    /// `192.0.2.1:80` or `[2001:db8::1]:80`, as logs and listener labels show an address.
    public var endpointText: String {
        guard let ip = IPAddress(self), let port else { return "\(self)" }
        return AddressText.endpoint(ip.socksHost, port: port)
    }

    /// This address with another port.
    public func withPort(_ port: Int) -> SocketAddress {
        var address = self
        address.port = port
        return address
    }
}
