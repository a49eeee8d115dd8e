import Foundation
import SallyportPolicy
import Testing

@testable import Sallyport

/// What the configuration check refuses or warns about because an attacker could use it: open
/// proxies behind balancers, SOCKS4 beside a login, a balancer list that trusts everyone, passwords
/// in clear, special ranges opened from a file, a proxy URL's password in a message.
@Suite(.timeLimit(.minutes(1))) struct ConfigurationSecurityTests {
    /// The errors (thrown by the loader, with their lines) and warnings of a file.
    func findings(_ yaml: String) throws -> (errors: [String], warnings: [String]) {
        do {
            let found = try ConfigurationLoader.parse(yaml: yaml, file: "s.yaml").validate()
            return (found.errors.map(\.message), found.warnings)
        } catch {
            return (["\(error)"], [])
        }
    }

    @Test func aLoopbackListenerBehindABalancerOfferingNoneIsAnOpenProxy() throws {
        let yaml = "listen:\n  - {address: 127.0.0.1:1080, proxy_protocol: v2, trusted_proxies: [127.0.0.1/32]}\n"
        let errors = try findings(yaml).errors
        #expect(errors.contains { $0.contains("takes its clients from a PROXY-protocol balancer") && $0.contains("open proxy") }, "\(errors)")
        #expect(try findings("allow_unauthenticated_remote: true\n" + yaml).errors.isEmpty)
        #expect(try findings("methods: [username]\n" + yaml).errors.isEmpty)
    }

    @Test func socks4OnAListenerThatAsksForALoginIsRefused() throws {
        let errors = try findings("methods: [username]\nlisten:\n  - {address: 127.0.0.1:1080, socks4: true}\n").errors
        #expect(errors.contains { $0.contains("serves socks4, which carries no password: SOCKS4 clients would get in without one") }, "\(errors)")
        #expect(try findings("listen:\n  - {address: 127.0.0.1:1080, socks4: true}\n").errors.isEmpty)
    }

    @Test(arguments: ["0.0.0.0/0", "\"::/0\""])
    func trustingEveryAddressAsABalancerIsRefused(block: String) throws {
        let errors = try findings("methods: [username]\nlisten:\n  - {address: 127.0.0.1:1080, proxy_protocol: v2, trusted_proxies: [\(block)]}\n")
            .errors
        #expect(errors.contains { $0.contains("trusted_proxies holds") && $0.contains("claim any client address") }, "\(errors)")
    }

    @Test func loginsOffLoopbackWithoutTLSAreWarnedToCrossTheWireInClearNamingTLSAsTheFix() throws {
        let remote = try findings("methods: [username]\nlisten: [192.0.2.1:1080]\n").warnings
        #expect(remote.contains { $0.contains("192.0.2.1:1080 takes logins off loopback without TLS: RFC 1929 sends user names and passwords in clear") }, "\(remote)")
        #expect(remote.contains { $0.contains("give this listener tls: {certificate: FILE, key: FILE}") }, "\(remote)")
        #expect(!(try findings("methods: [username]\nlisten: [127.0.0.1:1080]\n").warnings.contains { $0.contains("in clear") }))
        let tls = "methods: [username]\nlisten:\n  - {address: 192.0.2.1:1080, tls: {certificate: c.pem, key: k.pem}}\n"
        #expect(!(try findings(tls).warnings.contains { $0.contains("in clear") }))
    }

    @Test func methodNoneOffLoopbackIsAnOpenProxyUnlessClientCertificatesAreRequired() throws {
        let open = try findings("listen: [192.0.2.1:1080]\n").errors
        #expect(open.contains { $0.contains("would make an open proxy") }, "\(open)")
        let withCA = "listen:\n  - {address: 192.0.2.1:1080, methods: [certificate], tls: {certificate: c.pem, key: k.pem, client_ca: ca.pem}}\n"
        #expect(try findings(withCA).errors.isEmpty)
        let withoutCA = "listen:\n  - {address: 192.0.2.1:1080, tls: {certificate: c.pem, key: k.pem}}\n"
        #expect(try findings(withoutCA).errors.contains { $0.contains("would make an open proxy") })
        let certificateWithoutCA = "listen:\n  - {address: 127.0.0.1:1080, methods: [certificate], tls: {certificate: c.pem, key: k.pem}}\n"
        #expect(try findings(certificateWithoutCA).errors.contains { $0.contains("offers method 'certificate'") && $0.contains("client_ca") })
    }

    @Test func aMistypedProxyURLsPasswordIsNeverInTheMessage() {
        for url in ["htp://gw:s3cretpw@proxy:3128", "socks://gw:s3cretpw@proxy:1080", "gw:s3cretpw@proxy:3128"] {
            #expect {
                try ConfigurationLoader.parse(yaml: "rules: [{action: allow, via: \"\(url)\"}]\n", file: "v.yaml")
            } throws: { error in
                let text = "\(error)"
                return text.contains("is not a proxy URL") && !text.contains("s3cretpw") && text.contains("***@proxy")
            }
        }
    }

    @Test(arguments: ["http://proxy example:3128", "http://proxy\\r\\nX:3128", "http://gw%0d%0aX:pw@proxy:3128"])
    func aProxyURLWhosePartsCouldEndALineIsRefused(url: String) {
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.parse(yaml: "rules: [{action: allow, via: \"\(url)\"}]\n", file: "v.yaml") }
    }

    @Test func aToFileThatOpensSpecialRangesIsWarnedAbout() throws {
        let directory = NSTemporaryDirectory() + "sallyport-special-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "10.0.0.0/8\n169.254.169.254/32\n192.0.2.0/24\nexample.com\n".write(toFile: directory + "/inside.txt", atomically: true, encoding: .utf8)
        let configuration = try ConfigurationLoader.parse(
            yaml: "rules:\n  - {name: inside, action: allow, to_file: inside.txt}\n  - {name: blocked, action: deny, to_file: inside.txt}\n",
            file: directory + "/s.yaml")
        let warnings = configuration.validate().warnings.filter { $0.contains("lists special ranges") }
        #expect(warnings.count == 1 && warnings[0].contains("rule inside:") && warnings[0].contains("10.0.0.0/8, 169.254.169.254/32"), "\(warnings)")
    }

    @Test func aUserFileOthersCanWriteIsWarnedAbout() throws {
        let path = NSTemporaryDirectory() + "sallyport-users-\(UInt32.random(in: 0...UInt32.max))"
        try "alice:!locked\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        chmod(path, 0o660)
        guard case .success(let (_, groupWritable)) = AuthenticationSettings.readUserFile(path) else {
            Issue.record("the file did not load")
            return
        }
        #expect(groupWritable?.contains("writable by its group or by every user") == true, "\(groupWritable ?? "no warning")")
        chmod(path, 0o640)
        guard case .success(let (_, fine)) = AuthenticationSettings.readUserFile(path) else { return }
        #expect(fine == nil)
    }
}
