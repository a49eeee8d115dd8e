import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import SallyportPolicy
import Testing

@testable import Sallyport

@Suite(.timeLimit(.minutes(1))) struct ConfigurationTests {
    @Test func emptyFileGivesTheEmbeddedDefault() throws {
        let configuration = try ConfigurationLoader.parse(yaml: "", file: "empty.yaml")
        #expect(configuration == .embeddedDefault)
        #expect(configuration.listeners == [ListenerConfiguration(host: "127.0.0.1", port: 1080, methods: [.none])])
    }

    @Test func everyKeyIsRead() throws {
        let yaml = """
            listen:
              - 127.0.0.1:1081
              - "[::1]:1082"
              - address: 127.0.0.2:0
                methods: [username, none]
            methods: [none]
            timeouts:
              negotiation: 500ms
              connect: 3s
              idle: 2m
              shutdown_grace: 0
              shutdown_delay: 3s
            limits:
              early_data: 16KiB
            relay:
              receive_buffer: 128KiB
              keepalive: {idle: 2m, interval: 15s, count: 3}
            log:
              level: debug
              format: json
            """
        let configuration = try ConfigurationLoader.parse(yaml: yaml, file: "full.yaml")
        #expect(configuration.listeners == [
            .init(host: "127.0.0.1", port: 1081, methods: [.none]),
            .init(host: "::1", port: 1082, methods: [.none]),
            .init(host: "127.0.0.2", port: 0, methods: [.usernamePassword, .none]),
        ])
        #expect(configuration.timeouts.negotiation == .milliseconds(500))
        #expect(configuration.timeouts.connect == .seconds(3))
        #expect(configuration.timeouts.idle == .minutes(2))
        #expect(configuration.timeouts.shutdownGrace == .zero)
        #expect(configuration.limits.earlyDataBytes == 16384)
        #expect(configuration.relay.receiveBufferBytes == 131072)
        #expect(configuration.relay.keepalive == TCPKeepalive(idle: .minutes(2), interval: .seconds(15), count: 3))
        #expect(configuration.timeouts.shutdownDelay == .seconds(3))
        #expect(configuration.log == LogConfiguration(level: .debug, format: .json))
    }

    @Test func idleZeroTurnsTheIdleTimeoutOff() throws {
        let configuration = try ConfigurationLoader.parse(yaml: "timeouts:\n  idle: 0\n", file: "f.yaml")
        #expect(configuration.timeouts.idle == nil)
    }

    @Test func unknownKeyAndBadPortAreNamedWithTheirLines() {
        let yaml = """
            listen:
              - 127.0.0.1:99999
            timeouts:
              negotation: 5s
            """
        #expect {
            try ConfigurationLoader.parse(yaml: yaml, file: "bad.yaml")
        } throws: { error in
            let text = "\(error)"
            return text.contains("bad.yaml:2:5: listen[0]: '127.0.0.1:99999': the port must be a number from 0 to 65535")
                && text.contains("bad.yaml:4:3: timeouts.negotation: unknown key; known keys here: negotiation, connect, dns, bind, idle, shutdown_grace")
        }
    }

    @Test(arguments: [
        ("listen: 127.0.0.1:1080", "listen: expected a list"),
        ("listen: [localhost1:80]", "is not an IP address"),
        ("listen: [\"::1:80\"]", "an IPv6 address goes in brackets"),
        ("listen: [1080]", "expected HOST:PORT"),
        ("methods: [gssapi]", "unknown method 'gssapi'"),
        ("methods: []", "expected a non-empty list of methods"),
        ("timeouts:\n  connect: soon", "timeouts.connect: 'soon' is not a duration"),
        ("timeouts:\n  connect: 0", "timeouts.connect: '0' is not a duration"),
        ("log:\n  level: loud", "log.level: unknown value 'loud'; expected one of: trace, debug"),
        ("log:\n  format: xml", "log.format: unknown value 'xml'"),
        ("limits:\n  early_data: lots", "limits.early_data: 'lots' is not a size"),
        ("listen: [127.0.0.1:1080\n", "not valid YAML"),
        ("- just\n- a list", "expected a mapping of keys"),
        ("relay: {receive_buffer: 1}", "relay.receive_buffer: '1' is not a size from 4096"),
        ("relay: {keepalive: {idle: 500ms}}", "x.yaml:1:27: relay.keepalive.idle: keepalive times are whole seconds"),
        ("relay: {keepalive: {interval: 10h}}", "relay.keepalive.interval: keepalive times are whole seconds from 1s to 32767s"),
        ("relay: {keepalive: {count: 0}}", "relay.keepalive.count: '0' is not a whole number from 1 to 127"),
        ("relay: {keepalive: {probes: 3}}", "relay.keepalive.probes: unknown key; known keys here: idle, interval, count"),
        ("relay: {keepalive: yes}", "relay.keepalive: 'yes' is not 0 (off) or a mapping"),
        ("timeouts: {shutdown_delay: soon}", "timeouts.shutdown_delay: 'soon' is not a duration"),
        ("rules: [{action: allow, egress: {address: nowhere}}]", "rules[0].egress.address: 'nowhere' is not an IP address"),
        ("egress: {}", "egress needs address (a source IP) or interface"),
        ("rules: [{action: deny, egress: {address: 192.0.2.1}}]", "rules[0].egress: a deny rule sends nothing anywhere"),
        ("egress: {interface: far-too-long-a-name}", "egress.interface: 'far-too-long-a-name' is not an interface name"),
        ("egress: {address: 192.0.2.1, via: x}", "egress.via: unknown key"),
        ("rules: [{action: allow, via: \"ftp://proxy:21\"}]", "rules[0].via: 'ftp://proxy:21' is not a proxy URL"),
        ("rules: [{action: allow, via: \"socks5://proxy\"}]", "rules[0].via: 'socks5://proxy' names no port"),
        ("rules: [{action: allow, via: \"http://proxy:0\"}]", "is not host:port with a port from 1 to 65535"),
        ("rules: [{action: deny, via: \"http://proxy:3128\"}]", "rules[0].via: a deny rule sends nothing anywhere"),
        ("rules: [{action: allow, commands: [udp], via: \"http://proxy:3128\"}]", "rules[0].via: via carries CONNECT sessions only"),
        ("listen:\n  - methods: [none]", "listen[0]: missing key 'address'"),
    ])
    func badValuesAreExplained(yaml: String, expected: String) {
        #expect {
            try ConfigurationLoader.parse(yaml: yaml, file: "x.yaml")
        } throws: { error in
            "\(error)".contains(expected)
        }
    }

    @Test func everyProblemIsReportedNotJustTheFirst() {
        #expect {
            try ConfigurationLoader.parse(yaml: "bogus: 1\nlog:\n  level: loud\n  colour: red\n", file: "x.yaml")
        } throws: { error in
            (error as? ConfigurationError)?.problems.count == 3
        }
    }

    @Test func nonLoopbackListenerOfferingNoneIsAnOpenProxyAndRefused() {
        #expect {
            try ConfigurationLoader.parse(yaml: "listen:\n  - 127.0.0.1:1080\n  - 0.0.0.0:1080\n", file: "open.yaml")
        } throws: { error in
            let text = "\(error)"
            return text.contains("open.yaml:3:5: listen[1]: 0.0.0.0:1080 is not a loopback address but offers method 'none'")
                && !text.contains("listen[0]")
        }
    }

    @Test func openProxyIsAllowedOnlyWhenSaidExplicitly() throws {
        let yaml = "allow_unauthenticated_remote: true\nlisten: [\"[::]:1080\"]\n"
        let configuration = try ConfigurationLoader.parse(yaml: yaml, file: "f.yaml")
        #expect(configuration.allowUnauthenticatedRemote)
        let authenticated = try ConfigurationLoader.parse(yaml: "listen:\n  - address: 0.0.0.0:1080\n    methods: [username]\n", file: "f.yaml")
        #expect(authenticated.validate().errors.isEmpty)
    }

    @Test func aFileWithoutRulesBehavesTheSameWhateverElseItHolds() throws {
        for yaml in ["", "log:\n  level: debug\n", "listen: [127.0.0.1:1080]\n", "timeouts:\n  idle: 5m\n"] {
            let configuration = try ConfigurationLoader.parse(yaml: yaml, file: "f.yaml")
            #expect(configuration.policy == ServerConfiguration.embeddedDefault.policy, "\(yaml)")
            #expect(configuration.warnings.isEmpty)
            #expect(configuration.policySummary.contains("the default rule applies"))
        }
        // An explicit empty list allows nothing, and says so.
        let none = try ConfigurationLoader.parse(yaml: "rules: []\n", file: "f.yaml")
        #expect(none.policy.rules.isEmpty)
        #expect(none.warnings.contains { $0.contains("every request will be refused") })
    }

    @Test func everyProblemOfEverySectionIsReportedWithLineAndKeyPath() {
        let yaml = """
            timeouts:
              dns: 0
              connect: soon
            udp:
              max_pending_bytes: lots
              colour: red
            dns:
              per_client: 0
            auth:
              pam:
                threads: 1000
            rules:
              - action: maybe
                to: [nowhere/8]
              - to: ["*"]
            limits: 5
            """
        #expect {
            try ConfigurationLoader.parse(yaml: yaml, file: "s.yaml")
        } throws: { error in
            let text = "\(error)"
            return text.contains("s.yaml:2:8: timeouts.dns: '0' is not a duration")
                && text.contains("s.yaml:3:12: timeouts.connect: 'soon' is not a duration")
                && text.contains("s.yaml:5:22: udp.max_pending_bytes: 'lots' is not a size")
                && text.contains("s.yaml:6:3: udp.colour: unknown key; known keys here: enabled, advertise, port_range, idle, max_destinations, max_pending_destinations, max_pending_bytes, refused_memory")
                && text.contains("s.yaml:8:15: dns.per_client: '0' is not a whole number from 1 to 10000")
                && text.contains("s.yaml:11:14: auth.pam.threads: '1000' is not a whole number from 1 to 256")
                && text.contains("s.yaml:13:13: rules[0].action: 'maybe' is not allow or deny")
                && text.contains("s.yaml:14:10: rules[0].to[0]: 'nowhere/8' is not a destination")
                && text.contains("s.yaml:15:5: rules[1]: missing key 'action'")
                && text.contains("s.yaml:16:9: limits: expected a mapping of keys (early_data, max_sessions, sessions_per_user, sessions_per_client, connections_per_client, bandwidth_per_user)")
        }
    }

    @Test func checkConfigWarnsWhenAWideBlockLeavesSpecialRangesClosed() throws {
        let configuration = try ConfigurationLoader.parse(yaml: "rules:\n  - {name: everything, action: allow, to: [0.0.0.0/0, \"::/0\"]}\n", file: "w.yaml")
        #expect(configuration.warnings.contains {
            $0.contains("rule everything: 0.0.0.0/0 holds special ranges that stay closed (0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8 and 7 more)")
        })
        #expect(configuration.warnings.contains { $0.contains("rule everything: ::/0 holds special ranges") })
    }

    @Test func newSectionsAreRead() throws {
        let yaml = "timeouts: {dns: 2s}\ndns: {threads: 4, queue: 100, per_client: 3, cache_ttl: 0, negative_ttl: 1s, cache_size: 10}\nudp: {max_pending_destinations: 4, max_pending_bytes: 64KiB, refused_memory: 16}\n"
        let configuration = try ConfigurationLoader.parse(yaml: yaml, file: "f.yaml")
        #expect(configuration.timeouts.dns == .seconds(2))
        #expect(configuration.dns.threads == 4 && configuration.dns.queue == 100 && configuration.dns.perClient == 3)
        #expect(configuration.dns.cacheTTL == .zero && configuration.dns.negativeTTL == .seconds(1) && configuration.dns.cacheSize == 10)
        #expect(configuration.udp.maxPendingDestinations == 4 && configuration.udp.maxPendingBytes == 65_536 && configuration.udp.refusedMemory == 16)
    }

    @Test func serverRefusesToStartAnOpenProxy() async {
        let server = SallyportServer(
            configuration: ServerConfiguration(listeners: [.init(host: "192.0.2.1", port: 0, methods: [.none])]),
            logger: LogCapture().logger())
        await #expect {
            try await server.start()
        } throws: { error in
            "\(error)".contains("192.0.2.1:0 is not a loopback address but offers method 'none'")
        }
    }

    @Test(arguments: [("127.0.0.1", true), ("127.8.9.10", true), ("::1", true), ("::ffff:127.0.0.1", true), ("0.0.0.0", false), ("::", false), ("10.1.2.3", false)])
    func loopbackListenersAreRecognised(host: String, loopback: Bool) {
        #expect(ListenerConfiguration(host: host, port: 1).isLoopback == loopback)
    }

    @Test func authSettingsAreRead() throws {
        let yaml = "auth:\n  pam: {service: proxy-users, threads: 2, max_pending: 10}\n  throttle: {max_failures: 3, window: 30s, backoff: 5s, max_backoff: 1m}\n"
        let configuration = try ConfigurationLoader.parse(yaml: yaml, file: "f.yaml")
        #expect(configuration.auth.pam == .init(service: "proxy-users", threads: 2, maxPending: 10))
        #expect(configuration.auth.throttle == .init(maxFailures: 3, window: .seconds(30), backoff: .seconds(5), maxBackoff: .minutes(1)))
    }

    @Test func rulesClientsAndLimitsAreRead() throws {
        let yaml = """
            clients:
              - action: deny
                from: [10.9.0.0/16]
              - action: allow
                from: [10.0.0.0/8, "2001:db8::/32"]
            rules:
              - name: no-office-lan
                action: deny
                to: [192.168.10.0/24]
              - name: engineers
                action: allow
                who: [group:engineers, user:root-admin]
                to: ["*"]
                ports: [22, 443, 8000-8100]
              - action: allow
                who: authenticated
                to: [.Example.com, api.partner.test]
                commands: [connect]
            default_action: deny
            limits:
              max_sessions: 1000
              sessions_per_user: 20
              sessions_per_client: 50
              bandwidth_per_user: 1MiB
            """
        let configuration = try ConfigurationLoader.parse(yaml: yaml, file: "team.yaml")
        let policy = configuration.policy
        #expect(policy.clientRules == [
            ClientRule(action: .deny, from: [CIDR("10.9.0.0/16")!], line: 2),
            ClientRule(action: .allow, from: [CIDR("10.0.0.0/8")!, CIDR("2001:db8::/32")!], line: 4),
        ])
        #expect(policy.rules == [
            EgressRule(name: "no-office-lan", action: .deny, to: [.block(CIDR("192.168.10.0/24")!)], line: 7),
            EgressRule(name: "engineers", action: .allow, who: [.group("engineers"), .user("root-admin")], to: [.any], ports: [22...22, 443...443, 8000...8100], line: 10),
            EgressRule(action: .allow, who: [.authenticated], to: [.domainSuffix("example.com"), .host("api.partner.test")], commands: [.connect], line: 15),
        ])
        #expect(policy.defaultAction == .deny)
        #expect(configuration.limits.maxSessions == 1000)
        #expect(configuration.limits.sessionsPerUser == 20)
        #expect(configuration.limits.sessionsPerClient == 50)
        #expect(configuration.limits.bandwidthPerUser == 1 << 20)
        #expect(configuration.warnings.isEmpty)
    }

    @Test(arguments: [
        ("rules:\n  - to: ['*']\n", "rules[0]: missing key 'action'"),
        ("rules:\n  - action: permit\n", "rules[0].action: 'permit' is not allow or deny"),
        ("rules:\n  - action: allow\n    who: [\"user:\"]\n", "rules[0].who[0]: 'user:' is not a selector"),
        ("rules:\n  - action: allow\n    to: [10.0.0.0/40]\n", "rules[0].to[0]: '10.0.0.0/40' is not a destination"),
        ("rules:\n  - action: allow\n    to: [\"bad host\"]\n", "is not a destination"),
        ("rules:\n  - action: deny\n    to: [.bücher.example]\n", "rules[0].to[0]: '.bücher.example' is not ASCII; write an international name in its xn-- form"),
        ("rules:\n  - action: deny\n    to: [\"x\\u0600.evil.example\"]\n", "is not ASCII"),
        ("rules:\n  - action: allow\n    ports: [0]\n", "rules[0].ports[0]: '0' is not a port"),
        ("rules:\n  - action: allow\n    ports: [90-80]\n", "'90-80' is not a port"),
        ("rules:\n  - action: allow\n    commands: [bnid]\n", "unknown command 'bnid'; expected connect, udp or bind"),
        ("rules:\n  - action: allow\n    to: []\n", "an empty list matches nothing"),
        ("rules:\n  - {name: a, action: allow}\n  - {name: a, action: deny}\n", "rules[1].name: the name 'a' is used by an earlier rule"),
        ("rules:\n  - action: allow\n    form: x\n", "rules[0].form: unknown key"),
        ("clients:\n  - action: allow\n", "a client rule needs 'action'"),
        ("clients:\n  - action: allow\n    from: [somewhere]\n", "clients[0].from[0]: 'somewhere' is not an address block"),
        ("default_action: maybe\n", "default_action: 'maybe' is not allow or deny"),
        ("limits:\n  sessions_per_user: -1\n", "limits.sessions_per_user: '-1' is not a whole number"),
        ("limits:\n  bandwidth_per_user: 10\n", "too small to shape smoothly"),
    ])
    func badRulesAreExplainedWithTheirLines(yaml: String, expected: String) {
        #expect {
            try ConfigurationLoader.parse(yaml: yaml, file: "r.yaml")
        } throws: { error in
            let text = "\(error)"
            return text.contains(expected) && text.contains("r.yaml:")
        }
    }

    @Test func udpSettingsAreRead() throws {
        let configuration = try ConfigurationLoader.parse(
            yaml: "udp:\n  enabled: true\n  advertise: 198.51.100.4\n  port_range: 40000-40100\n  idle: 90s\n  max_destinations: 32\n", file: "u.yaml")
        #expect(configuration.udp.advertise == "198.51.100.4")
        #expect(configuration.udp.ports == 40000...40100)
        #expect(configuration.udp.idle == .seconds(90))
        #expect(configuration.udp.maxDestinations == 32)
        #expect {
            try ConfigurationLoader.parse(yaml: "udp:\n  advertise: my-host\n", file: "u.yaml")
        } throws: { "\($0)".contains("u.yaml:2:14: udp.advertise: 'my-host' is not an IP address") }
    }

    @Test func bindSettingsAndTimeoutAreRead() throws {
        let configuration = try ConfigurationLoader.parse(
            yaml: "bind:\n  advertise: 198.51.100.9\n  port_range: 41000-41999\ntimeouts:\n  bind: 45s\nrules:\n  - {action: allow, commands: [bind]}\n", file: "b.yaml")
        #expect(configuration.bind.advertise == "198.51.100.9")
        #expect(configuration.bind.ports == 41000...41999)
        #expect(configuration.timeouts.bind == .seconds(45))
        #expect(configuration.policy.rules.first?.commands == [.bind])
        #expect(ServerConfiguration().timeouts.bind == .minutes(2) && ServerConfiguration().bind.ports == nil)
        for (yaml, expected) in [
            ("bind:\n  advertise: my-host\n", "b.yaml:2:14: bind.advertise: 'my-host' is not an IP address"),
            ("bind:\n  port_range: 41000-\n", "b.yaml:2:15: bind.port_range:"),
            ("bind:\n  ports: 1\n", "b.yaml:2:3: bind.ports: unknown key; known keys here: advertise, port_range"),
        ] {
            #expect {
                try ConfigurationLoader.parse(yaml: yaml, file: "b.yaml")
            } throws: { "\($0)".contains(expected) }
        }
    }

    @Test func missingFileIsNamed() {
        #expect {
            try ConfigurationLoader.load(path: "/nonexistent/sallyport.yaml")
        } throws: { error in
            "\(error)".contains("/nonexistent/sallyport.yaml: cannot read the file")
        }
    }

    @Test func shippedExampleConfigurationsAreValid() throws {
        let example = try ConfigurationLoader.load(path: packageRoot() + "/conf/sallyport.yaml")
        #expect(!example.listeners.isEmpty)
        #expect(example.warnings.isEmpty)
        let team = try ConfigurationLoader.load(path: packageRoot() + "/conf/examples/team.yaml")
        #expect(team.policy.rules.map(\.name) == ["no-office-lan", "engineers", "contractors", "local-users-web"])
        // The TLS pair: no finding, no warning (their files are read when a server starts).
        let gateway = try ConfigurationLoader.load(path: packageRoot() + "/conf/examples/gateway-tls.yaml")
        #expect(gateway.listeners.first?.certificateMethod == true && gateway.listeners.first?.tls?.clientCA != nil)
        #expect(gateway.validate().errors.isEmpty && gateway.warnings.isEmpty)
        let laptop = try ConfigurationLoader.load(path: packageRoot() + "/conf/examples/laptop.yaml")
        let via = try #require(laptop.policy.rules.first?.route?.via)
        #expect(via.description == "socks5+tls://gateway.example:1443")
        #expect(via.tls?.ca == packageRoot() + "/conf/examples/tls/team-ca.pem")
        #expect(laptop.validate().errors.isEmpty && laptop.warnings.isEmpty)
    }
}
