import SOCKSProtocol

extension IPAddress {
    /// 32 or 128.
    public var bitWidth: Int {
        if case .v4 = self { return 32 }
        return 128
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or /128.
public struct CIDR: Hashable, Sendable {
    public let network: IPAddress
    public let prefixLength: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else { return nil }
        let maximum: Int
        if case .v4 = address { maximum = 32 } else { maximum = 128 }
        var length = maximum
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...maximum).contains(value) else { return nil }
            length = value
        }
        self.init(network: address, prefixLength: length)
    }

    public init(network: IPAddress, prefixLength: Int) {
        self.prefixLength = prefixLength
        switch network {
        case .v4(let address):
            self.network = .v4(SOCKSIPv4Address(address.value & Self.mask32(prefixLength)))
        case .v6(let address):
            let (high, low) = Self.mask128(prefixLength)
            self.network = .v6(SOCKSIPv6Address(high: address.high & high, low: address.low & low))
        }
    }

    /// True when `address` lies in this block. An IPv4-mapped IPv6 address counts as its IPv4 form.
    public func contains(_ address: IPAddress) -> Bool {
        switch (network, address.unmapped) {
        case (.v4(let network), .v4(let candidate)):
            return candidate.value & Self.mask32(prefixLength) == network.value
        case (.v6(let network), .v6(let candidate)):
            let (high, low) = Self.mask128(prefixLength)
            return candidate.high & high == network.high && candidate.low & low == network.low
        case (.v6, .v4(let candidate)):
            // A block written in IPv6 (as ::ffff:0:0/96) also holds the mapped form of IPv4 addresses.
            let mapped = IPAddress.v6(SOCKSIPv6Address(high: 0, low: 0xFFFF_0000_0000 | UInt64(candidate.value)))
            guard case .v6(let network) = network, case .v6(let value) = mapped else { return false }
            let (high, low) = Self.mask128(prefixLength)
            return value.high & high == network.high && value.low & low == network.low
        default:
            return false
        }
    }

    /// True when `other` lies wholly inside this block (an IPv4-mapped IPv6 block counts as IPv4).
    public func holds(_ other: CIDR) -> Bool {
        let inner = other.unmapped
        let outer = self.unmapped
        switch (outer.network, inner.network) {
        case (.v4, .v4), (.v6, .v6): return outer.prefixLength <= inner.prefixLength && outer.contains(inner.network)
        default: return false
        }
    }

    /// The IPv4 form of an IPv4-mapped block (`::ffff:10.0.0.0/104` is `10.0.0.0/8`); others unchanged.
    var unmapped: CIDR {
        if case .v6 = network, prefixLength >= 96, case .v4(let v4) = network.unmapped {
            return CIDR(network: .v4(v4), prefixLength: prefixLength - 96)
        }
        return self
    }

    static func mask32(_ length: Int) -> UInt32 {
        length == 0 ? 0 : UInt32.max << UInt32(32 - length)
    }

    static func mask128(_ length: Int) -> (UInt64, UInt64) {
        if length <= 64 { return (length == 0 ? 0 : UInt64.max << UInt64(64 - length), 0) }
        return (UInt64.max, length == 128 ? UInt64.max : UInt64.max << UInt64(128 - length))
    }
}

extension CIDR: CustomStringConvertible {
    public var description: String { "\(network)/\(prefixLength)" }
}

/// The address ranges no rule reaches unless it names them explicitly: loopback, RFC 1918,
/// link-local (cloud metadata included), CGNAT, "this network", multicast, reserved and broadcast,
/// and their IPv6 counterparts. IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64, 6to4)
/// are judged as the IPv4 address they carry.
public enum SpecialAddressGuard {
    static let ipv4Blocks: [CIDR] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    ].map { CIDR($0)! }

    static let ipv6Blocks: [CIDR] = [
        "::/128", "::1/128", "fe80::/10", "fec0::/10", "fc00::/7", "ff00::/8", "100::/64", "64:ff9b:1::/48",
        // Teredo tunnels to whatever IPv4 address its relay is told; documentation.
        "2001::/32", "2001:db8::/32",
    ].map { CIDR($0)! }

    /// Every special block.
    public static let blocks = ipv4Blocks + ipv6Blocks

    /// The address rules and the guard judge: the IPv4 address inside an IPv4-mapped, an
    /// IPv4-compatible (`::a.b.c.d`), a NAT64 (`64:ff9b::/96`) or a 6to4 (`2002::/16`) address,
    /// else the address itself.
    public static func judged(_ address: IPAddress) -> IPAddress {
        let unmapped = address.unmapped
        if case .v6(let v6) = unmapped, let embedded = embeddedIPv4(v6) { return .v4(embedded) }
        return unmapped
    }

    /// The block that makes `address` special, or nil for an ordinary public address.
    public static func block(containing address: IPAddress) -> CIDR? {
        switch address.unmapped {
        case .v4(let v4):
            let candidate = IPAddress.v4(v4)
            return ipv4Blocks.first { $0.contains(candidate) }
        case .v6(let v6):
            if let embedded = embeddedIPv4(v6), let block = block(containing: .v4(embedded)) { return block }
            return ipv6Blocks.first { $0.contains(.v6(v6)) }
        }
    }

    /// The IPv4 address carried by IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
    /// (`2002::/16`) addresses.
    static func embeddedIPv4(_ address: SOCKSIPv6Address) -> SOCKSIPv4Address? {
        if address.high == 0, address.low >> 32 == 0, address.low > 1 {
            return SOCKSIPv4Address(UInt32(truncatingIfNeeded: address.low))
        }
        if address.high == 0x0064_ff9b_0000_0000, address.low >> 32 == 0 {
            return SOCKSIPv4Address(UInt32(truncatingIfNeeded: address.low))
        }
        if address.high >> 48 == 0x2002 {
            return SOCKSIPv4Address(UInt32(truncatingIfNeeded: address.high >> 16))
        }
        return nil
    }
}
