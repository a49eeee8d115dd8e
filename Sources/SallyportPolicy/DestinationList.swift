import SOCKSProtocol

/// A rule's destinations kept as hash tables rather than a list: host names, domains (matched by
/// looking up each label boundary of the name, right to left), and address blocks (one table per
/// prefix length in use, probed with the address masked to that length — the lookup a radix tree
/// makes, in one hash probe per length). Whether it holds 1 entry or 1,000,000, a name costs one
/// probe per label and an address one probe per prefix length.
///
/// Built once (a `to_file` blocklist, or a policy's inline entries), then only read.
public final class DestinationList: Sendable {
    public let hosts: Set<String>
    public let domains: Set<String>
    /// Prefix lengths in use, longest first, each with its masked networks.
    let ipv4: [(length: Int, networks: Set<UInt32>)]
    let ipv6: [(length: Int, networks: Set<SOCKSIPv6Address>)]
    /// `*`: every destination.
    public let matchesEverything: Bool
    /// How many entries it was built from (duplicates included).
    public let count: Int

    /// Collects destinations one at a time (a file's, without a list of them all in between).
    public struct Builder {
        var hosts = Set<String>()
        var domains = Set<String>()
        var ipv4: [Int: Set<UInt32>] = [:]
        var ipv6: [Int: Set<SOCKSIPv6Address>] = [:]
        var any = false
        var count = 0

        /// `expected`: about how many entries will come.
        public init(expected: Int = 0) {
            hosts.reserveCapacity(expected)
        }

        public mutating func add(_ destination: EgressRule.Destination) {
            count += 1
            switch destination {
            case .any: any = true
            case .host(let name): hosts.insert(name)
            case .domainSuffix(let name): domains.insert(name)
            case .block(let block):
                switch block.network {
                case .v4(let network): ipv4[block.prefixLength, default: []].insert(network.value)
                case .v6(let network): ipv6[block.prefixLength, default: []].insert(network)
                }
            }
        }
    }

    public convenience init(_ destinations: some Sequence<EgressRule.Destination>) {
        var builder = Builder()
        for destination in destinations { builder.add(destination) }
        self.init(builder)
    }

    public init(_ builder: Builder) {
        self.hosts = builder.hosts
        self.domains = builder.domains
        self.ipv4 = builder.ipv4.sorted { $0.key > $1.key }.map { ($0.key, $0.value) }
        self.ipv6 = builder.ipv6.sorted { $0.key > $1.key }.map { ($0.key, $0.value) }
        self.matchesEverything = builder.any
        self.count = builder.count
    }

    /// Whether it holds any address block.
    public var hasBlocks: Bool { !ipv4.isEmpty || !ipv6.isEmpty }

    /// The listed blocks that lie inside a special range (for `check-config`: a file can open
    /// those as an inline block can).
    public var specialBlocks: [CIDR] {
        let all = ipv4.flatMap { length, networks in networks.map { CIDR(network: .v4(SOCKSIPv4Address($0)), prefixLength: length) } }
            + ipv6.flatMap { length, networks in networks.map { CIDR(network: .v6($0), prefixLength: length) } }
        return all.filter { block in SpecialAddressGuard.blocks.contains { $0.holds(block) } }.sorted { $0.description < $1.description }
    }

    /// Whether `name` (normalized: lower case, no trailing dot) is a listed host, lies in a listed
    /// domain, or everything is listed.
    public func matches(name: String) -> Bool {
        if matchesEverything { return true }
        if hosts.contains(name) { return true }
        guard !domains.isEmpty else { return false }
        if domains.contains(name) { return true }
        var rest = name[...]
        while let dot = rest.firstIndex(of: ".") {
            rest = rest[rest.index(after: dot)...]
            if domains.contains(String(rest)) { return true }
        }
        return false
    }

    /// The listed blocks that hold `address`, as `CIDR.contains` decides it (an IPv4 address is also
    /// sought in its IPv4-mapped IPv6 form), most specific first.
    public func blocks(containing address: IPAddress) -> [CIDR] {
        var found: [CIDR] = []
        switch address.unmapped {
        case .v4(let v4):
            for (length, networks) in ipv4 {
                let network = v4.value & CIDR.mask32(length)
                if networks.contains(network) { found.append(CIDR(network: .v4(SOCKSIPv4Address(network)), prefixLength: length)) }
            }
            if !ipv6.isEmpty { found += blocks6(SOCKSIPv6Address(high: 0, low: 0xFFFF_0000_0000 | UInt64(v4.value))) }
        case .v6(let v6):
            found += blocks6(v6)
        }
        return found
    }

    private func blocks6(_ address: SOCKSIPv6Address) -> [CIDR] {
        var found: [CIDR] = []
        for (length, networks) in ipv6 {
            let (high, low) = CIDR.mask128(length)
            let network = SOCKSIPv6Address(high: address.high & high, low: address.low & low)
            if networks.contains(network) { found.append(CIDR(network: .v6(network), prefixLength: length)) }
        }
        return found
    }
}

extension DestinationList: Hashable {
    /// Lists are compared by identity: a reload that reads the file again makes a new one.
    public static func == (lhs: DestinationList, rhs: DestinationList) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}
