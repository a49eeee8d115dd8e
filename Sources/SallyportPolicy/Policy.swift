import SOCKSProtocol

/// One egress rule. A rule matches a request when every part it names matches; a part left out
/// matches everything.
public struct EgressRule: Hashable, Sendable {
    /// Who the rule is for; matches when any selector matches.
    public enum Selector: Hashable, Sendable {
        case anyone
        case authenticated
        case anonymous
        case user(String)
        case group(String)

        /// Whether the selector names this subject.
        public func matches(_ subject: PolicySubject) -> Bool {
            switch self {
            case .anyone: return true
            case .authenticated: return subject.user != nil
            case .anonymous: return subject.user == nil
            case .user(let name): return subject.user == name
            case .group(let group): return subject.user != nil && subject.groups.contains(group)
            }
        }
    }

    /// Where the rule applies.
    public enum Destination: Hashable, Sendable {
        /// `*`: every destination (never lifts the special-address guard).
        case any
        /// An address block; it is what lifts the guard for the addresses it holds.
        case block(CIDR)
        /// One host name, matched without regard to case or a trailing dot.
        case host(String)
        /// `.example.com`: the domain and every name below it.
        case domainSuffix(String)
    }

    public var name: String?
    public var action: PolicyAction
    public var who: [Selector]?
    public var to: [Destination]?
    public var ports: [ClosedRange<UInt16>]?
    public var commands: Set<SOCKSCommand>?
    /// Destinations read from a file (`to_file`), in place of `to`.
    public var list: DestinationList?
    /// The file `list` was read from, for messages.
    public var listFile: String?
    /// How the sessions it allows leave this host (nil: the policy's default route).
    public var route: EgressRoute?
    /// Where the rule was written, for logs.
    public var line: Int?

    public init(
        name: String? = nil, action: PolicyAction, who: [Selector]? = nil, to: [Destination]? = nil,
        ports: [ClosedRange<UInt16>]? = nil, commands: Set<SOCKSCommand>? = nil, route: EgressRoute? = nil, line: Int? = nil
    ) {
        self.name = name
        self.action = action
        self.who = who
        self.to = to
        self.ports = ports
        self.commands = commands
        self.route = route
        self.line = line
    }

    /// How logs name the rule: its name, else its position and line.
    public func label(index: Int) -> String {
        if let name { return name }
        if let line { return "rule-\(index + 1)@line\(line)" }
        return "rule-\(index + 1)"
    }

    func appliesTo(_ subject: PolicySubject, port: UInt16, command: SOCKSCommand) -> Bool {
        if let ports, !ports.contains(where: { $0.contains(port) }) { return false }
        return appliesTo(subject, command: command)
    }

    /// Whether a normalized name is among the rule's destinations (`*` included).
    func matches(name: String) -> Bool {
        if let list { return list.matches(name: name) }
        return (to ?? [.any]).contains { Policy.matches($0, name: name) }
    }

    /// Whether every address matches (`*`, or no `to`).
    var matchesEveryAddress: Bool {
        if let list { return list.matchesEverything }
        return to.map { $0.contains(.any) } ?? true
    }

    /// Whether the rule names address blocks, which only a name's addresses can be judged by.
    var hasBlocks: Bool {
        if let list { return list.hasBlocks }
        return (to ?? []).contains { if case .block = $0 { return true } else { return false } }
    }

    /// The rule's blocks that hold `address` or its judged form.
    func blocks(containing address: IPAddress, judged: IPAddress) -> [CIDR] {
        if let list { return list.blocks(containing: address) + (judged == address.unmapped ? [] : list.blocks(containing: judged)) }
        return (to ?? []).compactMap { destination in
            if case .block(let block) = destination, block.contains(address) || block.contains(judged) { return block }
            return nil
        }
    }

    /// Whether the rule is for this subject and command, whatever the port.
    /// An allow rule without `commands` covers CONNECT and UDP ASSOCIATE, never BIND: letting
    /// strangers connect in to a client needs a rule that names `bind`. A deny applies to all three.
    func appliesTo(_ subject: PolicySubject, command: SOCKSCommand) -> Bool {
        if let commands {
            if !commands.contains(command) { return false }
        } else if command == .bind && action == .allow {
            return false
        }
        guard let who else { return true }
        return who.contains { $0.matches(subject) }
    }
}

/// A client rule, checked at accept before any negotiation.
public struct ClientRule: Hashable, Sendable {
    public var action: PolicyAction
    public var from: [CIDR]
    public var line: Int?

    public init(action: PolicyAction, from: [CIDR], line: Int? = nil) {
        self.action = action
        self.from = from
        self.line = line
    }
}

/// The egress policy: pure, no sockets. Rules are tried in order and the first that matches decides;
/// when none does, `defaultAction` does.
///
/// Names are checked twice. First the name alone, against the rules that can judge a name (host,
/// domain suffix, `*`): a deny there refuses the request before any lookup. Then every address the
/// name resolves to, against all rules (address blocks included) and the special-address guard;
/// only the addresses that pass may be connected to. A special address (loopback, private,
/// link-local, …, and the proxy host's own addresses) passes only through an allow rule whose
/// block holds it and lies inside the special block: `127.0.0.0/8` or `10.1.2.0/24` open theirs;
/// `0.0.0.0/0`, `::/0`, `*`, a name rule or the default action do not. That is what stops a name
/// that resolves to 127.0.0.1 (DNS rebinding) or to a cloud metadata address, and a rule written to
/// mean "all of IPv4" from opening them. IPv4 carried in IPv6 (mapped, NAT64) is judged as the IPv4
/// address, by the guard and by IPv4 rules alike.
public struct Policy: Hashable, Sendable {
    public var rules: [EgressRule]
    public var defaultAction: PolicyAction
    public var clientRules: [ClientRule]
    /// The proxy host's own addresses (not loopback, which the guard holds anyway): special, each
    /// opened only by a rule that names it.
    public var hostAddresses: Set<IPAddress>
    /// How sessions leave this host when the rule that allowed them names no route (the default
    /// action's too).
    public var defaultRoute: EgressRoute?

    public init(rules: [EgressRule], defaultAction: PolicyAction = .deny, clientRules: [ClientRule] = [], hostAddresses: Set<IPAddress> = []) {
        self.rules = rules
        self.defaultAction = defaultAction
        self.clientRules = clientRules
        self.hostAddresses = hostAddresses
    }


    /// The embedded default: every public destination for everyone, the guard on.
    public static let allowPublic = Policy(rules: [EgressRule(name: "default-public", action: .allow, to: [.any])])

    /// What decided, for logs.
    public enum Reason: Hashable, Sendable, CustomStringConvertible {
        case rule(String)
        case defaultAction
        case specialAddress(CIDR)
        case clientRule(Int?)

        public var description: String {
            switch self {
            case .rule(let label): return label
            case .defaultAction: return "default"
            case .specialAddress(let block): return "guard:\(block)"
            case .clientRule(let line): return line.map { "clients@line\($0)" } ?? "clients"
            }
        }
    }

    /// The outcome of a name check.
    public enum NameDecision: Hashable, Sendable {
        /// Resolve the name and check its addresses.
        case resolve
        case deny(Reason)
        /// An allow rule that sends its sessions through another proxy matched the name itself:
        /// the name goes to that proxy unresolved (it resolves it). `route` is that rule's.
        case upstream(Reason, route: EgressRoute)
    }

    /// The outcome of an address check.
    public enum Decision: Hashable, Sendable {
        /// These addresses may be used; `reason` names the rule that allowed the first of them,
        /// `route` is that rule's own (nil: the policy's default route).
        case allow([IPAddress], Reason, route: EgressRoute? = nil)
        /// None may; `reason` names what refused the first address.
        case deny(Reason)
    }

    /// Checks a client's address at accept. With no client rules, every client may talk; with some,
    /// a client no rule matches is refused.
    public func admitsClient(_ address: IPAddress?) -> (Bool, Reason) {
        guard !clientRules.isEmpty else { return (true, .defaultAction) }
        guard let address else { return (false, .clientRule(nil)) }
        for rule in clientRules where rule.from.contains(where: { $0.contains(address) }) {
            return (rule.action == .allow, .clientRule(rule.line))
        }
        return (false, .clientRule(nil))
    }

    /// Allow rules whose blocks hold special ranges that no allow rule opens: those ranges stay
    /// closed, which a rule like `0.0.0.0/0` may not mean to say. For `check-config`.
    public func specialRangesLeftClosed() -> [(rule: String, block: CIDR, closed: [CIDR])] {
        let opening = rules.filter { $0.action == .allow }.flatMap { $0.to ?? [] }.compactMap { destination -> CIDR? in
            if case .block(let block) = destination { return block }
            return nil
        }
        var result: [(rule: String, block: CIDR, closed: [CIDR])] = []
        for (index, rule) in rules.enumerated() where rule.action == .allow {
            for case .block(let block) in rule.to ?? [] {
                let closed = SpecialAddressGuard.blocks.filter { special in
                    block.holds(special) && block != special && !opening.contains { special.holds($0) }
                }
                if !closed.isEmpty { result.append((rule.label(index: index), block, closed)) }
            }
        }
        return result
    }

    /// Allow rules whose `to_file` lists blocks inside special ranges: the file opens them as an
    /// inline block would, out of sight of whoever reads the rules. For `check-config`.
    public func specialRangesOpenedByFiles() -> [(rule: String, file: String, blocks: [CIDR])] {
        rules.enumerated().compactMap { index, rule in
            guard rule.action == .allow, let list = rule.list else { return nil }
            let blocks = list.specialBlocks
            return blocks.isEmpty ? nil : (rule.label(index: index), rule.listFile ?? "to_file", blocks)
        }
    }

    /// What refuses every destination of `command` to `subject`, or nil when some destination could
    /// be allowed: the first rule for them (whatever the port) that denies everything, before any
    /// allow for them; else the default action when no allow applies to them at all.
    public func refusesEveryDestination(_ command: SOCKSCommand, subject: PolicySubject) -> Reason? {
        for (index, rule) in rules.enumerated() where rule.appliesTo(subject, command: command) {
            if rule.action == .allow { return nil }
            if rule.matchesEveryAddress && rule.ports == nil { return .rule(rule.label(index: index)) }
        }
        return allowsByDefault(command) ? nil : .defaultAction
    }

    /// Whether `default_action` allows `command`: `allow` does for CONNECT and UDP, never for BIND.
    public func allowsByDefault(_ command: SOCKSCommand) -> Bool {
        defaultAction == .allow && command != .bind
    }

    /// The first check of a name: a deny here needs no lookup.
    public func checkName(_ name: String, port: UInt16, command: SOCKSCommand, subject: PolicySubject) -> NameDecision {
        checkName(name, port: port, command: command, subject: subject) { .rule(rules[$0].label(index: $0)) }
    }

    /// `checkName`, naming rule `index` by `label(index)`.
    func checkName(_ name: String, port: UInt16, command: SOCKSCommand, subject: PolicySubject, label: (Int) -> Reason) -> NameDecision {
        let normalized = Self.normalize(name)
        for (index, rule) in rules.enumerated() where rule.appliesTo(subject, port: port, command: command) {
            if rule.matches(name: normalized) {
                if rule.action == .deny { return .deny(label(index)) }
                if let route = rule.route, route.via != nil { return .upstream(label(index), route: route) }
                return .resolve
            }
            // An address rule may judge the name's addresses: only they can tell.
            if rule.hasBlocks { return .resolve }
        }
        return allowsByDefault(command) ? .resolve : .deny(.defaultAction)
    }

    /// The check of a destination's addresses (`name` is the name they came from, if any).
    public func checkAddresses(
        _ addresses: [IPAddress], name: String?, port: UInt16, command: SOCKSCommand, subject: PolicySubject
    ) -> Decision {
        checkAddresses(addresses, name: name, port: port, command: command, subject: subject) { .rule(rules[$0].label(index: $0)) }
    }

    /// `checkAddresses`, naming rule `index` by `label(index)`.
    func checkAddresses(
        _ addresses: [IPAddress], name: String?, port: UInt16, command: SOCKSCommand, subject: PolicySubject, label: (Int) -> Reason
    ) -> Decision {
        let normalized = name.map(Self.normalize)
        return Self.decide(addresses) { checkAddress($0, name: normalized, port: port, command: command, subject: subject, label: label) }
    }

    /// The decision over several addresses from each one's: those allowed, named by the rule that
    /// allowed the first; else the refusal of the first.
    static func decide(_ addresses: [IPAddress], _ check: (IPAddress) -> Result<Allowed, Refusal>) -> Decision {
        var allowed: [IPAddress] = []
        var firstAllow: Allowed?
        var firstDeny: Reason?
        for address in addresses {
            switch check(address) {
            case .success(let allow):
                allowed.append(address)
                if firstAllow == nil { firstAllow = allow }
            case .failure(let refusal):
                if firstDeny == nil { firstDeny = refusal.reason }
            }
        }
        if let firstAllow { return .allow(allowed, firstAllow.reason, route: firstAllow.route) }
        return .deny(firstDeny ?? .defaultAction)
    }

    /// What allowed one address: the rule, and its route.
    struct Allowed {
        var reason: Reason
        var route: EgressRoute?
    }

    struct Refusal: Error {
        var reason: Reason
    }

    /// The special block `address` lies in, if any: the host's own address first, then the guard's.
    public func specialBlock(containing address: IPAddress) -> CIDR? {
        let judged = SpecialAddressGuard.judged(address)
        if hostAddresses.contains(judged) { return CIDR(network: judged, prefixLength: judged.bitWidth) }
        return SpecialAddressGuard.block(containing: address)
    }

    func checkAddress(
        _ address: IPAddress, name: String?, port: UInt16, command: SOCKSCommand, subject: PolicySubject, label: (Int) -> Reason
    ) -> Result<Allowed, Refusal> {
        let judged = SpecialAddressGuard.judged(address)
        let special = specialBlock(containing: address)
        for (index, rule) in rules.enumerated() where rule.appliesTo(subject, port: port, command: command) {
            var byBlock = false
            var opensSpecial = false
            for block in rule.blocks(containing: address, judged: judged) {
                byBlock = true
                if let special, special.holds(block) { opensSpecial = true }
            }
            let byOther = rule.matchesEveryAddress || (name.map { rule.matches(name: $0) } ?? false)
            guard byBlock || byOther else { continue }
            if rule.action == .deny { return .failure(Refusal(reason: label(index))) }
            // A special address needs an allow whose block lies inside the special block.
            if special != nil && !opensSpecial { continue }
            return .success(Allowed(reason: label(index), route: rule.route))
        }
        if let special { return .failure(Refusal(reason: .specialAddress(special))) }
        return allowsByDefault(command) ? .success(Allowed(reason: .defaultAction)) : .failure(Refusal(reason: .defaultAction))
    }

    /// A name as rules compare it: lower case, without a trailing dot.
    public static func normalize(_ name: String) -> String {
        // What the parser passes on is in this form already: no copy for it.
        let bytes = name.utf8
        if bytes.last != UInt8(ascii: "."), !bytes.contains(where: { ($0 >= 0x41 && $0 <= 0x5A) || $0 >= 0x80 }) { return name }
        var lowered = name.lowercased()
        while lowered.hasSuffix(".") { lowered.removeLast() }
        return lowered
    }

    static func matches(_ destination: EgressRule.Destination, name: String) -> Bool {
        switch destination {
        case .any: return true
        case .block: return false
        case .host(let host): return name == host
        case .domainSuffix(let suffix): return name == suffix || name.hasSuffix("." + suffix)
        }
    }
}
