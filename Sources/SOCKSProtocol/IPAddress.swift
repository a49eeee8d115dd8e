#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address, for matching.
public enum IPAddress: Hashable, Sendable {
    case v4(SOCKSIPv4Address)
    case v6(SOCKSIPv6Address)

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

    /// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`); others unchanged.
    public var unmapped: IPAddress {
        if case .v6(let address) = self, address.high == 0, address.low >> 32 == 0xFFFF {
            return .v4(SOCKSIPv4Address(UInt32(truncatingIfNeeded: address.low)))
        }
        return self
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

