import SOCKSProtocol
import Testing

@testable import SallyportPolicy

/// The compiled policy decides exactly as the rules tried one by one do: random policies (rules
/// for various subjects, ports and commands; hosts, domains, blocks in and around the special
/// ranges, IPv4-mapped and NAT64 forms; inline lists and file lists) against random destinations.
@Suite(.timeLimit(.minutes(1))) struct CompiledPolicyTests {
    /// A small deterministic generator (xorshift), so a failure names its seed.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
    }

    static let destinations: [EgressRule.Destination] = [
        .any, .host("example.com"), .host("api.example.com"), .domainSuffix("example.com"), .domainSuffix("corp.test"),
        .domainSuffix("test"), .host("db.corp.test"),
    ] + [
        "127.0.0.0/8", "127.0.0.1/32", "10.0.0.0/8", "10.1.2.0/24", "192.0.2.0/24", "192.0.2.7/32", "0.0.0.0/0", "::/0",
        "2001:db8::/32", "::ffff:10.0.0.0/104", "::ffff:0:0/96", "64:ff9b::/96", "fe80::/10", "8.8.8.0/24",
    ].map { .block(CIDR($0)!) }

    static let names = ["example.com", "api.example.com", "www.example.com", "x.corp.test", "db.corp.test", "other.org", "test", "EXAMPLE.com."]
    static let addresses = [
        "127.0.0.1", "10.1.2.3", "10.9.9.9", "192.0.2.7", "192.0.2.8", "::ffff:10.1.2.3", "64:ff9b::c000:207", "2001:db8::1",
        "8.8.8.8", "::1", "fe80::1", "1.1.1.1", "64:ff9b::a01:203",
    ].map { IPAddress($0)! }
    static let subjects = [PolicySubject(user: nil), PolicySubject(user: "alice", groups: ["staff"]), PolicySubject(user: "bob")]

    static func randomPolicy(_ random: inout Generator) -> Policy {
        let selectors: [[EgressRule.Selector]?] = [nil, [.user("alice")], [.group("staff")], [.authenticated], [.anonymous], [.anyone]]
        var rules: [EgressRule] = []
        for index in 0..<Int.random(in: 1...12, using: &random) {
            var to: [EgressRule.Destination]? = (0..<Int.random(in: 0...4, using: &random)).map { _ in destinations.randomElement(using: &random)! }
            if Int.random(in: 0..<6, using: &random) == 0 { to = nil }
            var rule = EgressRule(
                name: "r\(index)", action: Bool.random(using: &random) ? .allow : .deny, who: selectors.randomElement(using: &random)!, to: to,
                ports: Bool.random(using: &random) ? nil : [80...80, 1000...2000], commands: Bool.random(using: &random) ? nil : [.connect])
            if Int.random(in: 0..<4, using: &random) == 0 { rule.route = EgressRoute(via: UpstreamProxy(kind: .socks5, host: "127.0.0.1", port: 1)) }
            if let entries = to, Int.random(in: 0..<3, using: &random) == 0 {
                rule.list = DestinationList(entries)
                rule.to = nil
            }
            rules.append(rule)
        }
        return Policy(rules: rules, defaultAction: Bool.random(using: &random) ? .allow : .deny, hostAddresses: [IPAddress("192.0.2.8")!])
    }

    @Test(arguments: 0..<8)
    func decidesAsTheRulesTriedOneByOne(batch: Int) {
        var random = Generator(state: 0x9E37_79B9_7F4A_7C15 &+ UInt64(batch) &* 1_000_003)
        for round in 0..<400 {
            let policy = Self.randomPolicy(&random)
            // The index always, however small the policy.
            let compiled = CompiledPolicy(policy, indexFrom: 0)
            for _ in 0..<20 {
                let subject = Self.subjects.randomElement(using: &random)!
                let port: UInt16 = [80, 443, 1500].randomElement(using: &random)!
                let command: SOCKSCommand = Bool.random(using: &random) ? .connect : .udpAssociate
                let name = Self.names.randomElement(using: &random)!
                #expect(
                    compiled.checkName(name, port: port, command: command, subject: subject)
                        == policy.checkName(name, port: port, command: command, subject: subject),
                    "batch \(batch) round \(round): name \(name) \(policy)")
                let addresses = (0..<Int.random(in: 1...3, using: &random)).map { _ in Self.addresses.randomElement(using: &random)! }
                let asked = Bool.random(using: &random) ? name : nil
                #expect(
                    compiled.checkAddresses(addresses, name: asked, port: port, command: command, subject: subject)
                        == policy.checkAddresses(addresses, name: asked, port: port, command: command, subject: subject),
                    "batch \(batch) round \(round): \(addresses) \(asked ?? "-") \(policy)")
            }
        }
    }

    @Test func aMillionEntryListIsOneLookupPerLabelOrPrefix() {
        // 1,000,000 hosts and 65,536 blocks in one deny list, then an allow for the rest.
        var entries: [EgressRule.Destination] = (0..<1_000_000).map { .host("h\($0).blocked.test") }
        entries += (0..<65_536).map { .block(CIDR(network: .v4(SOCKSIPv4Address(0x0B00_0000 | UInt32($0) << 8)), prefixLength: 24)) }
        var deny = EgressRule(name: "blocklist", action: .deny)
        deny.list = DestinationList(entries)
        let policy = Policy(rules: [deny, EgressRule(name: "rest", action: .allow, to: [.any])])
        let compiled = CompiledPolicy(policy, indexFrom: 0)
        let anyone = PolicySubject(user: nil)
        #expect(compiled.checkName("h999999.blocked.test", port: 443, command: .connect, subject: anyone) == .deny(.rule("blocklist")))
        #expect(compiled.checkName("h1000000.blocked.test", port: 443, command: .connect, subject: anyone) == .resolve)
        #expect(compiled.checkAddresses([IPAddress("11.255.255.1")!], name: nil, port: 443, command: .connect, subject: anyone) == .deny(.rule("blocklist")))
        #expect(compiled.checkAddresses([IPAddress("12.0.0.1")!], name: nil, port: 443, command: .connect, subject: anyone)
            == .allow([IPAddress("12.0.0.1")!], .rule("rest")))
    }
}
