import SOCKSProtocol

/// A policy compiled for the server: the same decisions as `Policy.checkName` and
/// `Policy.checkAddresses` (first match wins, the guard, the default action), without trying the
/// rules one by one. Every inline destination of every rule goes into one index that names the
/// rules listing it; a decision looks up the name's labels and the address's prefixes, then tries
/// only the rules found, in their order, with the rules that match everything and the rules with a
/// file list of their own. So it costs about the same with 1 rule as with 1,000,000 entries.
///
/// Built once per configuration (at load and at each reload), then only read, from every event loop.
public final class CompiledPolicy: Sendable {
    public let policy: Policy
    private let hosts: [String: [Int32]]
    private let domains: [String: [Int32]]
    private let ipv4: [(length: Int, networks: [UInt32: [Int32]])]
    private let ipv6: [(length: Int, networks: [SOCKSIPv6Address: [Int32]])]
    /// Rules that match every destination (`*`, no `to`, or a list holding `*`).
    private let everywhere: [Int32]
    /// Rules with address blocks: the name check stops at the first that applies.
    private let withBlocks: [Int32]
    /// Rules with a file list, which answer for themselves.
    private let withLists: [Int32]
    /// A policy this small is decided by trying its rules one by one: that allocates nothing and
    /// is quicker than the index until there are dozens of entries.
    private let tryRulesInTurn: Bool
    /// Each rule's label, made once: decisions name their rule without building text.
    private let labels: [Policy.Reason]

    /// `indexFrom`: the number of inline entries from which the index is used (the tests set 0).
    public init(_ policy: Policy, indexFrom: Int = 48) {
        self.policy = policy
        let entries = policy.rules.reduce(0) { $0 + ($1.to?.count ?? 1) }
        self.tryRulesInTurn = entries < indexFrom && policy.rules.allSatisfy { $0.list == nil }
        self.labels = policy.rules.indices.map { .rule(policy.rules[$0].label(index: $0)) }
        var hosts: [String: [Int32]] = [:]
        var domains: [String: [Int32]] = [:]
        var ipv4: [Int: [UInt32: [Int32]]] = [:]
        var ipv6: [Int: [SOCKSIPv6Address: [Int32]]] = [:]
        var everywhere: [Int32] = []
        var withBlocks: [Int32] = []
        var withLists: [Int32] = []
        for (position, rule) in policy.rules.enumerated() {
            let index = Int32(position)
            if rule.matchesEveryAddress { everywhere.append(index) }
            if rule.hasBlocks { withBlocks.append(index) }
            if rule.list != nil {
                withLists.append(index)
                continue
            }
            for destination in rule.to ?? [] {
                switch destination {
                case .any: break
                case .host(let name): Self.add(index, to: &hosts[name, default: []])
                case .domainSuffix(let name): Self.add(index, to: &domains[name, default: []])
                case .block(let block):
                    switch block.network {
                    case .v4(let network): Self.add(index, to: &ipv4[block.prefixLength, default: [:]][network.value, default: []])
                    case .v6(let network): Self.add(index, to: &ipv6[block.prefixLength, default: [:]][network, default: []])
                    }
                }
            }
        }
        self.hosts = hosts
        self.domains = domains
        self.ipv4 = ipv4.sorted { $0.key > $1.key }.map { ($0.key, $0.value) }
        self.ipv6 = ipv6.sorted { $0.key > $1.key }.map { ($0.key, $0.value) }
        self.everywhere = everywhere
        self.withBlocks = withBlocks
        self.withLists = withLists
    }

    /// Rules are added in order, so each list stays sorted; a rule listing an entry twice is one.
    private static func add(_ index: Int32, to list: inout [Int32]) {
        if list.last != index { list.append(index) }
    }

    // MARK: Decisions

    /// `Policy.admitsClient`.
    public func admitsClient(_ address: IPAddress?) -> (Bool, Policy.Reason) {
        policy.admitsClient(address)
    }

    /// `Policy.refusesEveryDestination`.
    public func refusesEveryDestination(_ command: SOCKSCommand, subject: PolicySubject) -> Policy.Reason? {
        policy.refusesEveryDestination(command, subject: subject)
    }

    /// `Policy.checkName`, through the index.
    public func checkName(_ name: String, port: UInt16, command: SOCKSCommand, subject: PolicySubject) -> Policy.NameDecision {
        if tryRulesInTurn { return policy.checkName(name, port: port, command: command, subject: subject) { labels[$0] } }
        let normalized = Policy.normalize(name)
        let named = rules(naming: normalized)
        var candidates = Candidates([everywhere, withBlocks, withLists, named])
        while let index = candidates.next() {
            let rule = policy.rules[Int(index)]
            guard rule.appliesTo(subject, port: port, command: command) else { continue }
            if named.contains(index) || rule.matchesEveryAddress || (rule.list?.matches(name: normalized) ?? false) {
                if rule.action == .deny { return .deny(labels[Int(index)]) }
                if let route = rule.route, route.via != nil { return .upstream(labels[Int(index)], route: route) }
                return .resolve
            }
            if rule.hasBlocks { return .resolve }
        }
        return policy.allowsByDefault(command) ? .resolve : .deny(.defaultAction)
    }

    /// `Policy.checkAddresses`, through the index.
    public func checkAddresses(
        _ addresses: [IPAddress], name: String?, port: UInt16, command: SOCKSCommand, subject: PolicySubject
    ) -> Policy.Decision {
        if tryRulesInTurn { return policy.checkAddresses(addresses, name: name, port: port, command: command, subject: subject) { labels[$0] } }
        let normalized = name.map(Policy.normalize)
        let named = normalized.map(rules(naming:)) ?? []
        return Policy.decide(addresses) { checkAddress($0, name: normalized, named: named, port: port, command: command, subject: subject) }
    }

    private func checkAddress(
        _ address: IPAddress, name: String?, named: [Int32], port: UInt16, command: SOCKSCommand, subject: PolicySubject
    ) -> Result<Policy.Allowed, Policy.Refusal> {
        let judged = SpecialAddressGuard.judged(address)
        let special = policy.specialBlock(containing: address)
        var hits = blockHits(address)
        if judged != address.unmapped { hits += blockHits(judged) }
        hits.sort { $0.rule < $1.rule }
        var candidates = Candidates([everywhere, withLists, named, hits.map(\.rule)])
        while let index = candidates.next() {
            let rule = policy.rules[Int(index)]
            guard rule.appliesTo(subject, port: port, command: command) else { continue }
            var blocks = hits.filter { $0.rule == index }.map(\.block)
            if rule.list != nil { blocks = rule.blocks(containing: address, judged: judged) }
            let byOther = rule.matchesEveryAddress || named.contains(index) || (name.map { rule.list?.matches(name: $0) ?? false } ?? false)
            guard !blocks.isEmpty || byOther else { continue }
            let label = labels[Int(index)]
            if rule.action == .deny { return .failure(Policy.Refusal(reason: label)) }
            if let special, !blocks.contains(where: special.holds) { continue }
            return .success(Policy.Allowed(reason: label, route: rule.route))
        }
        if let special { return .failure(Policy.Refusal(reason: .specialAddress(special))) }
        return policy.allowsByDefault(command) ? .success(Policy.Allowed(reason: .defaultAction)) : .failure(Policy.Refusal(reason: .defaultAction))
    }

    /// Rules whose inline hosts or domains hold `name`, in order.
    private func rules(naming name: String) -> [Int32] {
        var found = hosts[name] ?? []
        if !domains.isEmpty {
            if let rules = domains[name] { found += rules }
            var rest = name[...]
            while let dot = rest.firstIndex(of: ".") {
                rest = rest[rest.index(after: dot)...]
                if let rules = domains[String(rest)] { found += rules }
            }
        }
        if found.count > 1 { found = Array(Set(found)).sorted() }
        return found
    }

    /// The inline blocks holding `address` (in IPv4-mapped form too, as `CIDR.contains` does).
    private func blockHits(_ address: IPAddress) -> [(rule: Int32, block: CIDR)] {
        var hits: [(rule: Int32, block: CIDR)] = []
        func probe6(_ v6: SOCKSIPv6Address) {
            for (length, networks) in ipv6 {
                let (high, low) = CIDR.mask128(length)
                let network = SOCKSIPv6Address(high: v6.high & high, low: v6.low & low)
                for rule in networks[network] ?? [] { hits.append((rule, CIDR(network: .v6(network), prefixLength: length))) }
            }
        }
        switch address.unmapped {
        case .v4(let v4):
            for (length, networks) in ipv4 {
                let network = v4.value & CIDR.mask32(length)
                for rule in networks[network] ?? [] { hits.append((rule, CIDR(network: .v4(SOCKSIPv4Address(network)), prefixLength: length))) }
            }
            if !ipv6.isEmpty { probe6(SOCKSIPv6Address(high: 0, low: 0xFFFF_0000_0000 | UInt64(v4.value))) }
        case .v6(let v6):
            probe6(v6)
        }
        return hits
    }
}

/// The union of sorted lists of rule indices, walked in ascending order without repeats.
struct Candidates {
    private var lists: [[Int32]]
    private var positions: [Int]

    init(_ lists: [[Int32]]) {
        self.lists = lists.filter { !$0.isEmpty }
        self.positions = Array(repeating: 0, count: self.lists.count)
    }

    mutating func next() -> Int32? {
        var smallest: Int32?
        for (list, position) in zip(lists, positions) where position < list.count {
            if smallest == nil || list[position] < smallest! { smallest = list[position] }
        }
        guard let smallest else { return nil }
        for index in lists.indices where positions[index] < lists[index].count && lists[index][positions[index]] == smallest {
            positions[index] += 1
        }
        return smallest
    }
}
