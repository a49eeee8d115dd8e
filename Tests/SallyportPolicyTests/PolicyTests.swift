import SOCKSProtocol
import Testing

@testable import SallyportPolicy

func ip(_ text: String) -> IPAddress { IPAddress(text)! }
func block(_ text: String) -> CIDR { CIDR(text)! }

let anonymous = PolicySubject(user: nil)
let alice = PolicySubject(user: "alice", groups: ["alice", "engineers"])
let carol = PolicySubject(user: "carol", groups: ["contractors"])

/// The team example of the README: engineers reach anything on 22 and 443; contractors only
/// .example.com; nobody reaches the office LAN.
let teamPolicy = Policy(rules: [
    EgressRule(name: "no-office-lan", action: .deny, to: [.block(block("192.168.10.0/24"))]),
    EgressRule(name: "engineers", action: .allow, who: [.group("engineers")], to: [.any], ports: [22...22, 443...443]),
    EgressRule(name: "contractors", action: .allow, who: [.group("contractors")], to: [.domainSuffix("example.com")]),
])

@Suite(.timeLimit(.minutes(1))) struct AddressTests {
    @Test(arguments: [
        ("10.1.2.3", "10.0.0.0/8", true), ("11.0.0.1", "10.0.0.0/8", false),
        ("192.168.1.1", "192.168.1.1", true), ("192.168.1.2", "192.168.1.1/32", false),
        ("2001:db8::1", "2001:db8::/32", true), ("2001:db9::1", "2001:db8::/32", false),
        ("::ffff:10.0.0.1", "10.0.0.0/8", true), ("10.0.0.1", "::ffff:0:0/96", true),
        ("1.2.3.4", "0.0.0.0/0", true), ("::1", "0.0.0.0/0", false), ("::1", "::/0", true),
        ("100.127.255.255", "100.64.0.0/10", true), ("100.128.0.0", "100.64.0.0/10", false),
    ])
    func blocksHoldTheirAddresses(address: String, cidr: String, expected: Bool) {
        #expect(block(cidr).contains(ip(address)) == expected)
    }

    @Test(arguments: ["10.0.0.0/33", "::/129", "10.0.0/8", "host/8", "1.2.3.4/-1", ""])
    func badBlocksAreRejected(text: String) {
        #expect(CIDR(text) == nil)
    }

    @Test(arguments: [
        "0.1.2.3", "10.0.0.1", "100.64.0.1", "127.0.0.1", "127.255.0.9", "169.254.169.254", "172.16.0.1",
        "172.31.255.255", "192.168.0.1", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:192.168.1.1", "::ffff:100.64.0.1",
        "::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2002:c0a8:101::1",
    ])
    func specialAddressesAreGuarded(address: String) {
        #expect(SpecialAddressGuard.block(containing: ip(address)) != nil, "\(address) is not guarded")
    }

    @Test(arguments: ["1.1.1.1", "93.184.216.34", "172.32.0.1", "100.128.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"])
    func publicAddressesAreNotGuarded(address: String) {
        #expect(SpecialAddressGuard.block(containing: ip(address)) == nil, "\(address) is guarded")
    }
}

@Suite(.timeLimit(.minutes(1))) struct PolicyTests {
    @Test func embeddedDefaultAllowsPublicAddressesOnly() {
        let policy = Policy.allowPublic
        #expect(policy.checkAddresses([ip("93.184.216.34")], name: nil, port: 443, command: .connect, subject: anonymous)
            == .allow([ip("93.184.216.34")], .rule("default-public")))
        for special in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fd00::1"] {
            guard case .deny(.specialAddress) = policy.checkAddresses([ip(special)], name: nil, port: 80, command: .connect, subject: anonymous) else {
                Issue.record("\(special) was not refused by the guard")
                continue
            }
        }
    }

    @Test func noRulesAllowsNothing() {
        let policy = Policy(rules: [])
        #expect(policy.checkName("example.com", port: 443, command: .connect, subject: alice) == .deny(.defaultAction))
        #expect(policy.checkAddresses([ip("1.1.1.1")], name: nil, port: 443, command: .connect, subject: alice) == .deny(.defaultAction))
    }

    @Test func defaultAllowStillKeepsTheGuard() {
        let policy = Policy(rules: [], defaultAction: .allow)
        #expect(policy.checkAddresses([ip("1.1.1.1")], name: nil, port: 1, command: .connect, subject: anonymous) == .allow([ip("1.1.1.1")], .defaultAction))
        #expect(policy.checkAddresses([ip("127.0.0.1")], name: nil, port: 1, command: .connect, subject: anonymous) == .deny(.specialAddress(block("127.0.0.0/8"))))
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var subject: PolicySubject
        var name: String?
        var address: String
        var port: UInt16
        var command: SOCKSCommand = .connect
        var allowed: Bool
        var reason: String
        var testDescription: String { "\(subject.user ?? "-") → \(name ?? address):\(port) \(command)" }
    }

    @Test(arguments: [
        Case(subject: alice, address: "93.184.216.34", port: 443, allowed: true, reason: "engineers"),
        Case(subject: alice, address: "93.184.216.34", port: 22, allowed: true, reason: "engineers"),
        Case(subject: alice, address: "93.184.216.34", port: 80, allowed: false, reason: "default"),
        Case(subject: alice, address: "192.168.10.5", port: 22, allowed: false, reason: "no-office-lan"),
        Case(subject: carol, name: "www.example.com", address: "93.184.216.34", port: 80, allowed: true, reason: "contractors"),
        Case(subject: carol, name: "example.com", address: "93.184.216.34", port: 80, allowed: true, reason: "contractors"),
        Case(subject: carol, name: "badexample.com", address: "93.184.216.34", port: 80, allowed: false, reason: "default"),
        Case(subject: carol, address: "93.184.216.34", port: 443, allowed: false, reason: "default"),
        Case(subject: anonymous, address: "93.184.216.34", port: 443, allowed: false, reason: "default"),
        // A contractor name that resolves into the office LAN is still refused.
        Case(subject: carol, name: "intranet.example.com", address: "192.168.10.7", port: 80, allowed: false, reason: "no-office-lan"),
        // And one that resolves to loopback meets the guard.
        Case(subject: carol, name: "evil.example.com", address: "127.0.0.1", port: 80, allowed: false, reason: "guard:127.0.0.0/8"),
        Case(subject: alice, address: "::ffff:127.0.0.1", port: 443, allowed: false, reason: "guard:127.0.0.0/8"),
    ])
    func teamPolicyTable(testCase: Case) {
        let decision: Policy.Decision
        if let name = testCase.name, case .deny(let reason) = teamPolicy.checkName(name, port: testCase.port, command: testCase.command, subject: testCase.subject) {
            decision = .deny(reason)
        } else {
            decision = teamPolicy.checkAddresses([ip(testCase.address)], name: testCase.name, port: testCase.port, command: testCase.command, subject: testCase.subject)
        }
        switch decision {
        case .allow(_, let reason, _):
            #expect(testCase.allowed)
            #expect(reason.description == testCase.reason)
        case .deny(let reason):
            #expect(!testCase.allowed)
            #expect(reason.description == testCase.reason)
        }
    }

    @Test func firstMatchWins() {
        let policy = Policy(rules: [
            EgressRule(name: "deny-bob", action: .deny, who: [.user("bob")]),
            EgressRule(name: "allow-all", action: .allow),
            EgressRule(name: "never-reached", action: .deny),
        ])
        #expect(policy.checkAddresses([ip("1.1.1.1")], name: nil, port: 1, command: .connect, subject: PolicySubject(user: "bob")) == .deny(.rule("deny-bob")))
        #expect(policy.checkAddresses([ip("1.1.1.1")], name: nil, port: 1, command: .connect, subject: alice) == .allow([ip("1.1.1.1")], .rule("allow-all")))
    }

    @Test func selectorsMatchWhoTheyName() {
        func allowed(_ selector: EgressRule.Selector, _ subject: PolicySubject) -> Bool {
            let policy = Policy(rules: [EgressRule(action: .allow, who: [selector])])
            if case .allow = policy.checkAddresses([ip("1.1.1.1")], name: nil, port: 1, command: .connect, subject: subject) { return true }
            return false
        }
        #expect(allowed(.anyone, anonymous) && allowed(.anyone, alice))
        #expect(allowed(.authenticated, alice) && !allowed(.authenticated, anonymous))
        #expect(allowed(.anonymous, anonymous) && !allowed(.anonymous, alice))
        #expect(allowed(.user("alice"), alice) && !allowed(.user("alice"), carol))
        #expect(allowed(.group("engineers"), alice) && !allowed(.group("engineers"), carol) && !allowed(.group("engineers"), anonymous))
    }

    @Test func portsAndCommandsNarrowARule() {
        let policy = Policy(rules: [EgressRule(name: "dns", action: .allow, ports: [53...53, 8000...8100], commands: [.udpAssociate])])
        func allowed(_ port: UInt16, _ command: SOCKSCommand) -> Bool {
            if case .allow = policy.checkAddresses([ip("9.9.9.9")], name: nil, port: port, command: command, subject: anonymous) { return true }
            return false
        }
        #expect(allowed(53, .udpAssociate))
        #expect(allowed(8000, .udpAssociate) && allowed(8100, .udpAssociate) && !allowed(8101, .udpAssociate))
        #expect(!allowed(53, .connect))
    }

    @Test func bindNeedsAnAllowThatNamesItWhileADenyWithoutCommandsStillAppliesToIt() {
        let peers = EgressRule(name: "ftp-peers", action: .allow, who: [.group("engineers")], to: [.block(block("93.184.216.0/24"))], commands: [.bind])
        let everything = EgressRule(name: "everything", action: .allow)
        let noLab = EgressRule(name: "no-lab", action: .deny, to: [.block(block("93.184.216.128/25"))])
        func decision(_ policy: Policy, _ address: String, _ subject: PolicySubject) -> Policy.Decision {
            let compiled = CompiledPolicy(policy, indexFrom: 0)
            let plain = policy.checkAddresses([ip(address)], name: nil, port: 21, command: .bind, subject: subject)
            // The compiled policy decides the same.
            #expect(compiled.checkAddresses([ip(address)], name: nil, port: 21, command: .bind, subject: subject) == plain)
            return plain
        }
        // An allow without commands, and default_action allow, cover CONNECT and UDP, never BIND.
        let open = Policy(rules: [everything], defaultAction: .allow)
        #expect(decision(open, "93.184.216.7", alice) == .deny(.defaultAction))
        #expect(open.refusesEveryDestination(.bind, subject: alice) == .defaultAction)
        #expect(open.refusesEveryDestination(.connect, subject: alice) == nil)
        #expect(!open.allowsByDefault(.bind) && open.allowsByDefault(.connect))
        // A rule naming bind allows it, for its subjects and destinations only.
        let team = Policy(rules: [noLab, peers, everything])
        #expect(decision(team, "93.184.216.7", alice) == .allow([ip("93.184.216.7")], .rule("ftp-peers")))
        #expect(decision(team, "93.184.216.7", carol) == .deny(.defaultAction))
        #expect(decision(team, "8.8.8.8", alice) == .deny(.defaultAction))
        // A deny without commands applies to BIND as to the others.
        #expect(decision(team, "93.184.216.200", alice) == .deny(.rule("no-lab")))
        #expect(team.refusesEveryDestination(.bind, subject: alice) == nil)
        #expect(team.refusesEveryDestination(.bind, subject: carol) == .defaultAction)
    }

    @Test func hostRulesMatchWithoutCaseOrTrailingDot() {
        let policy = Policy(rules: [EgressRule(name: "one", action: .allow, to: [.host("api.example.com")])])
        #expect(policy.checkName("API.Example.COM.", port: 443, command: .connect, subject: anonymous) == .resolve)
        #expect(policy.checkName("www.api.example.com", port: 443, command: .connect, subject: anonymous) == .deny(.defaultAction))
        #expect(policy.checkAddresses([ip("1.2.3.4")], name: "api.example.com.", port: 443, command: .connect, subject: anonymous) == .allow([ip("1.2.3.4")], .rule("one")))
    }

    @Test func deniedNameIsRefusedBeforeAnyLookup() {
        let policy = Policy(rules: [EgressRule(name: "no-tracker", action: .deny, to: [.domainSuffix("tracker.test")]), EgressRule(action: .allow)])
        #expect(policy.checkName("a.tracker.test", port: 443, command: .connect, subject: anonymous) == .deny(.rule("no-tracker")))
    }

    @Test func addressRuleBeforeADenyMakesTheNameResolve() {
        let policy = Policy(rules: [EgressRule(name: "partner", action: .allow, to: [.block(block("203.0.113.0/24"))]), EgressRule(name: "rest", action: .deny)])
        #expect(policy.checkName("partner.test", port: 443, command: .connect, subject: anonymous) == .resolve)
        #expect(policy.checkAddresses([ip("203.0.113.9")], name: "partner.test", port: 443, command: .connect, subject: anonymous) == .allow([ip("203.0.113.9")], .rule("partner")))
        #expect(policy.checkAddresses([ip("198.51.100.1")], name: "partner.test", port: 443, command: .connect, subject: anonymous) == .deny(.rule("rest")))
    }

    @Test func onlyPassingAddressesOfANameAreKept() {
        let policy = Policy(rules: [EgressRule(name: "web", action: .allow, to: [.domainSuffix("example.com")])])
        let decision = policy.checkAddresses(
            [ip("127.0.0.1"), ip("93.184.216.34"), ip("10.0.0.1"), ip("2606:2800:220:1::1")], name: "rebind.example.com",
            port: 443, command: .connect, subject: anonymous)
        #expect(decision == .allow([ip("93.184.216.34"), ip("2606:2800:220:1::1")], .rule("web")))
    }

    @Test func explicitBlockLiftsTheGuardButStarAndNamesDoNot() {
        let policy = Policy(rules: [
            EgressRule(name: "everything", action: .allow, to: [.any]),
            EgressRule(name: "local-dev", action: .allow, who: [.user("alice")], to: [.block(block("127.0.0.0/8")), .host("dev.local")]),
        ])
        // alice: "*" comes first but cannot lift the guard; the later explicit block does.
        #expect(policy.checkAddresses([ip("127.0.0.1")], name: nil, port: 8080, command: .connect, subject: alice) == .allow([ip("127.0.0.1")], .rule("local-dev")))
        #expect(policy.checkAddresses([ip("::ffff:127.0.0.1")], name: nil, port: 8080, command: .connect, subject: alice) == .allow([ip("::ffff:127.0.0.1")], .rule("local-dev")))
        // …not for someone else,
        #expect(policy.checkAddresses([ip("127.0.0.1")], name: nil, port: 8080, command: .connect, subject: carol) == .deny(.specialAddress(block("127.0.0.0/8"))))
        // …and a name rule alone does not lift it for another special range.
        #expect(policy.checkAddresses([ip("10.0.0.1")], name: "dev.local", port: 80, command: .connect, subject: alice) == .deny(.specialAddress(block("10.0.0.0/8"))))
        // ::1 is not in 127.0.0.0/8.
        #expect(policy.checkAddresses([ip("::1")], name: nil, port: 80, command: .connect, subject: alice) == .deny(.specialAddress(block("::1/128"))))
    }

    @Test func clientRulesFirstMatchAndDefaultDenyOnceAnyExist() {
        #expect(Policy(rules: []).admitsClient(ip("203.0.113.1")).0)
        let policy = Policy(rules: [], clientRules: [
            ClientRule(action: .deny, from: [block("10.9.0.0/16")], line: 3),
            ClientRule(action: .allow, from: [block("10.0.0.0/8"), block("2001:db8::/32")], line: 4),
        ])
        #expect(policy.admitsClient(ip("10.1.1.1")) == (true, .clientRule(4)))
        #expect(policy.admitsClient(ip("10.9.1.1")) == (false, .clientRule(3)))
        #expect(policy.admitsClient(ip("2001:db8::5")).0)
        #expect(policy.admitsClient(ip("::ffff:10.1.1.1")).0)
        #expect(!policy.admitsClient(ip("192.0.2.1")).0)
    }
}
