import SOCKSProtocol
import Testing

@testable import SallyportPolicy

/// The special-address guard: which rules open a special block, and which only seem to.
@Suite(.timeLimit(.minutes(1))) struct GuardTests {
    func allowing(_ blocks: String...) -> Policy {
        Policy(rules: [EgressRule(name: "wide", action: .allow, to: blocks.map { .block(block($0)) })])
    }

    func allows(_ policy: Policy, _ address: String) -> Bool {
        if case .allow = policy.checkAddresses([ip(address)], name: nil, port: 80, command: .connect, subject: anonymous) { return true }
        return false
    }

    @Test(arguments: ["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254", "10.0.0.1", "64:ff9b::7f00:1", "::1", "fd00::1"])
    func aBlockThatMerelyContainsASpecialRangeDoesNotOpenIt(address: String) {
        // Written to mean "all of IPv4" or "all of IPv6": neither opens loopback, metadata or the LAN.
        #expect(!allows(allowing("0.0.0.0/0", "::/0"), address))
        #expect(!allows(allowing("0.0.0.0/1", "::/1"), address))
        // Public addresses still pass.
        #expect(allows(allowing("0.0.0.0/0", "::/0"), "93.184.216.34"))
        #expect(allows(allowing("0.0.0.0/0", "::/0"), "2001:4860:4860::8888"))
    }

    @Test func aBlockInsideASpecialRangeOpensWhatItHolds() {
        #expect(allows(allowing("127.0.0.0/8"), "127.0.0.1"))
        #expect(allows(allowing("127.0.0.0/8"), "::ffff:127.0.0.1"))
        #expect(allows(allowing("10.1.2.0/24"), "10.1.2.3"))
        #expect(!allows(allowing("10.1.2.0/24"), "10.1.3.3"))
        #expect(allows(allowing("169.254.169.254/32"), "169.254.169.254"))
        #expect(!allows(allowing("169.254.169.254/32"), "169.254.0.1"))
        #expect(allows(allowing("::ffff:127.0.0.0/104"), "127.0.0.1"))
    }

    @Test func ipv4RulesJudgeIPv4CarriedInNAT64() {
        let deny = Policy(rules: [
            EgressRule(name: "no-docs", action: .deny, to: [.block(block("203.0.113.0/24"))]),
            EgressRule(name: "public", action: .allow, to: [.any]),
        ])
        #expect(deny.checkAddresses([ip("64:ff9b::cb00:7101")], name: nil, port: 80, command: .connect, subject: anonymous) == .deny(.rule("no-docs")))
        #expect(allows(allowing("93.184.216.0/24"), "64:ff9b::5db8:d822"))
        // Local-use NAT64 is special as a whole.
        #expect(SpecialAddressGuard.block(containing: ip("64:ff9b:1::a00:1")) != nil)
        #expect(SpecialAddressGuard.judged(ip("64:ff9b::7f00:1")) == ip("127.0.0.1"))
    }

    @Test func ipv4RulesJudgeIPv4Carried6to4AndCompatible() {
        let deny = Policy(rules: [
            EgressRule(name: "no-docs", action: .deny, to: [.block(block("203.0.113.0/24"))]),
            EgressRule(name: "public", action: .allow, to: [.any]),
        ])
        // 2002:cb00:7101:: is 6to4 for 203.0.113.1; ::cb00:7101 the IPv4-compatible form.
        for text in ["2002:cb00:7101::1", "::cb00:7101"] {
            #expect(deny.checkAddresses([ip(text)], name: nil, port: 80, command: .connect, subject: anonymous) == .deny(.rule("no-docs")), "\(text)")
        }
        #expect(SpecialAddressGuard.judged(ip("2002:7f00:1::")) == ip("127.0.0.1"))
    }

    @Test func teredoIsSpecialAsAWhole() {
        // Teredo carries an IPv4 server and client, obfuscated: no rule for a public block opens it.
        #expect(SpecialAddressGuard.block(containing: ip("2001:0:4136:e378:8000:63bf:3fff:fdd2")) == block("2001::/32"))
        #expect(!allows(Policy.allowPublic, "2001:0:4136:e378:8000:63bf:3fff:fdd2"))
        #expect(allows(Policy.allowPublic, "2001:4860:4860::8888"), "other 2001: space is ordinary")
    }

    @Test func withClientRulesAPeerWithoutAnAddressIsRefused() {
        let policy = Policy(rules: [], clientRules: [ClientRule(action: .allow, from: [block("0.0.0.0/0"), block("::/0")])])
        #expect(policy.admitsClient(nil).0 == false)
        #expect(Policy(rules: []).admitsClient(nil).0 == true, "no client rules: nobody is asked for an address")
    }

    @Test func theHostsOwnAddressesAreSpecial() {
        var policy = Policy.allowPublic
        policy.hostAddresses = [ip("203.0.113.5")]
        #expect(!allows(policy, "203.0.113.5"))
        #expect(!allows(policy, "::ffff:203.0.113.5"))
        #expect(allows(policy, "203.0.113.6"))
        // A block around it does not open it; naming it does.
        policy.rules.insert(EgressRule(name: "docs-net", action: .allow, to: [.block(block("203.0.113.0/24"))]), at: 0)
        #expect(!allows(policy, "203.0.113.5"))
        policy.rules.insert(EgressRule(name: "this-host", action: .allow, to: [.block(block("203.0.113.5"))]), at: 0)
        #expect(allows(policy, "203.0.113.5"))
        #expect(policy.specialBlock(containing: ip("203.0.113.5")) == block("203.0.113.5/32"))
    }

    @Test func rangesAWideRuleLeavesClosedAreListed() {
        let closed = allowing("0.0.0.0/0", "127.0.0.0/8").specialRangesLeftClosed()
        #expect(closed.count == 1)
        #expect(closed.first?.block == block("0.0.0.0/0"))
        #expect(closed.first?.closed.contains(block("10.0.0.0/8")) == true)
        // 127.0.0.0/8 is opened by its own block, so it is not listed.
        #expect(closed.first?.closed.contains(block("127.0.0.0/8")) == false)
        #expect(allowing("10.0.0.0/8").specialRangesLeftClosed().isEmpty)
        #expect(Policy.allowPublic.specialRangesLeftClosed().isEmpty)
    }
}
