import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import SallyportPolicy
import Testing

@testable import Sallyport

/// The routing keys of the file: egress routes, upstream URLs, `to_file` lists, keepalive.
@Suite(.timeLimit(.minutes(1))) struct RoutingConfigurationTests {
    @Test func egressRoutesAreReadAndCheckedAgainstThisHost() throws {
        let configuration = try ConfigurationLoader.parse(yaml: """
            egress: {address: 127.0.0.2}
            rules:
              - {name: lab, action: allow, to: ["*"], egress: {address: 192.0.2.99, interface: nosuch0}}
            """, file: "e.yaml")
        #expect(configuration.policy.defaultRoute == EgressRoute(address: IPAddress("127.0.0.2")))
        #expect(configuration.policy.rules[0].route == EgressRoute(address: IPAddress("192.0.2.99"), interface: "nosuch0"))
        let warnings = configuration.validate().warnings
        #expect(warnings.contains { $0.contains("rule lab: egress address 192.0.2.99 is not an address of this host now") }, "\(warnings)")
        #expect(warnings.contains { $0.contains("rule lab: interface nosuch0 does not exist now") }, "\(warnings)")
        // Loopback addresses are always this host's.
        #expect(!warnings.contains { $0.contains("127.0.0.2") })
    }

    @Test func upstreamURLsAreReadWithPercentEncodedCredentials() throws {
        let configuration = try ConfigurationLoader.parse(yaml: """
            rules:
              - {name: a, action: allow, via: "socks5://us%40er:p%3Ass@[::1]:1080"}
              - {name: b, action: allow, via: "http://proxy.example:3128/", egress: {address: 127.0.0.1}}
            """, file: "u.yaml")
        #expect(configuration.policy.rules[0].route?.via == UpstreamProxy(kind: .socks5, host: "::1", port: 1080, username: "us@er", password: "p:ss"))
        #expect(configuration.policy.rules[0].route?.via?.description == "socks5://[::1]:1080")
        #expect(configuration.policy.rules[1].route == EgressRoute(address: IPAddress("127.0.0.1"), via: UpstreamProxy(kind: .http, host: "proxy.example", port: 3128)))
    }

    @Test func aRulesToFileIsReadRelativeToTheConfigurationWithItsBadLinesNamed() throws {
        let directory = NSTemporaryDirectory() + "sallyport-list-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "# ads\nAds.Example.com\n.tracker.test   # and below\n\n0.0.0.0 hosts-file.test\n203.0.113.0/24\n2001:db8::/32\n"
            .write(toFile: directory + "/block.list", atomically: true, encoding: .utf8)
        try "rules:\n  - {name: blocklist, action: deny, to_file: block.list}\n".write(toFile: directory + "/s.yaml", atomically: true, encoding: .utf8)
        let configuration = try ConfigurationLoader.load(path: directory + "/s.yaml")
        let list = try #require(configuration.policy.rules.first?.list)
        #expect(list.hosts == ["ads.example.com", "hosts-file.test"])
        #expect(list.domains == ["tracker.test"])
        #expect(list.blocks(containing: IPAddress("203.0.113.9")!) == [CIDR("203.0.113.0/24")!])
        #expect(list.count == 5)

        try "ok.test\nnot a name\nbad_label..test\n".write(toFile: directory + "/bad.list", atomically: true, encoding: .utf8)
        try "rules:\n  - {action: deny, to_file: bad.list}\n  - {action: deny, to: [x.test], to_file: block.list}\n  - {action: deny, to_file: /nonexistent/list}\n"
            .write(toFile: directory + "/t.yaml", atomically: true, encoding: .utf8)
        #expect {
            try ConfigurationLoader.load(path: directory + "/t.yaml")
        } throws: { error in
            let text = "\(error)"
            return text.contains("rules[0].to_file: \(directory)/bad.list:2: 'not a name' holds more than one destination")
                && text.contains("\(directory)/bad.list:3: 'bad_label..test' is not a host name")
                && text.contains("rules[1].to_file: a rule takes either to or to_file, not both")
                && text.contains("rules[2].to_file: cannot read /nonexistent/list")
        }
    }

    @Test func keepaliveIsOnByDefaultAndZeroTurnsItOff() throws {
        #expect(try ConfigurationLoader.parse(yaml: "", file: "f.yaml").relay.keepalive == TCPKeepalive(idle: .seconds(60), interval: .seconds(10), count: 5))
        #expect(try ConfigurationLoader.parse(yaml: "relay:\n  keepalive: 0\n", file: "f.yaml").relay.keepalive == nil)
        // Keys left out keep their defaults.
        #expect(try ConfigurationLoader.parse(yaml: "relay: {keepalive: {count: 9}}", file: "f.yaml").relay.keepalive?.idle == .seconds(60))
    }
}
