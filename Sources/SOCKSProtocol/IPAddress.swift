/// An IPv4 or IPv6 address, for matching.
public enum IPAddress: Hashable, Sendable {
    case v4(SOCKSIPv4Address)
    case v6(SOCKSIPv6Address)

    /// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`); others unchanged.
    public var unmapped: IPAddress {
        if case .v6(let address) = self, address.high == 0, address.low >> 32 == 0xFFFF {
            return .v4(SOCKSIPv4Address(UInt32(truncatingIfNeeded: address.low)))
        }
        return self
    }
}
