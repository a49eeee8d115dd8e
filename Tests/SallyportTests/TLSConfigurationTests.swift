import SallyportAuth
import SallyportPolicy
import Testing

@testable import Sallyport

/// The `tls:` section of a listener and the `socks5+tls` via: what they read, where relative
/// paths point, and the messages for what cannot work.
@Suite struct TLSConfigurationTests {
    func error(_ yaml: String) -> String {
        do {
            _ = try ConfigurationLoader.parse(yaml: yaml, file: "/etc/sallyport/s.yaml")
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test func aListenersTLSIsReadWithPathsRelativeToTheFile() throws {
        let yaml = """
            listen:
              - address: 127.0.0.1:1443
                methods: [certificate]
                tls:
                  certificate: tls/chain.pem
                  key: /secret/key.pem
                  client_ca: ca.pem
                  crl: crl.pem
                  identity: email
                  min_version: "1.3"
                  groups: {alice@example.test: [staff, ops], "Jos\u{E9}": [dev]}
            """
        let configuration = try ConfigurationLoader.parse(yaml: yaml, file: "/etc/sallyport/s.yaml")
        let listener = try #require(configuration.listeners.first)
        let tls = try #require(listener.tls)
        #expect(tls.certificate == "/etc/sallyport/tls/chain.pem" && tls.key == "/secret/key.pem")
        #expect(tls.clientCA == "/etc/sallyport/ca.pem" && tls.crl == "/etc/sallyport/crl.pem")
        #expect(tls.identity == .email && tls.minimumVersion == "1.3")
        #expect(tls.groups == ["alice@example.test": ["staff", "ops"], "Jos\u{E9}": ["dev"]])
        // certificate is method none on the wire.
        #expect(listener.methods == [.none] && listener.certificateMethod)
    }

    @Test(arguments: [
        ("tls: {certificate: c.pem}", "tls needs certificate and key"),
        ("tls: {certificate: c.pem, key: k.pem, identity: dn}", "unknown value 'dn'; expected one of: cn, email, uri"),
        ("tls: {certificate: c.pem, key: k.pem, min_version: \"1.1\"}", "'1.1' is not 1.2 or 1.3"),
        ("tls: {certificate: c.pem, key: k.pem, crl: r.pem}", "a CRL revokes client certificates: set client_ca too"),
        ("tls: {certificate: c.pem, key: k.pem, client_ca: ca.pem, groups: {\"a\\nb\": [x]}}", "is not a user name a certificate can carry"),
        ("tls: {certificate: c.pem, key: k.pem, client_ca: ca.pem, groups: {alice: [\"st aff\"]}}", "is not a group name"),
        ("tls: {certificate: c.pem, key: k.pem, ciphers: all}", "unknown key; known keys here"),
    ])
    func whatCannotWorkIsRefusedWithTheKeyAndTheFix(line: String, message: String) {
        let found = error("listen:\n  - address: 127.0.0.1:1443\n    \(line)\n")
        #expect(found.contains(message), "\(found)")
        #expect(found.contains("listen[0].tls"), "\(found)")
    }

    @Test func aSocks5TLSViaReadsItsFilesAndServerName() throws {
        let yaml = """
            rules:
              - action: allow
                to: ["*"]
                via: socks5+tls://alice:s3cret@gateway.example:1443
                tls_ca: ca.pem
                tls_server_name: gw.example
                tls_certificate: me.pem
                tls_key: me.key
            """
        let configuration = try ConfigurationLoader.parse(yaml: yaml, file: "/etc/sallyport/s.yaml")
        let via = try #require(configuration.policy.rules.first?.route?.via)
        #expect(via.kind == .socks5 && via.host == "gateway.example" && via.port == 1443 && via.username == "alice")
        #expect(via.tls == UpstreamTLS(ca: "/etc/sallyport/ca.pem", serverName: "gw.example", certificate: "/etc/sallyport/me.pem", key: "/etc/sallyport/me.key"))
        // What logs show: the scheme with +tls, never the password.
        #expect(via.description == "socks5+tls://gateway.example:1443")
    }

    @Test(arguments: [
        ("via: socks5://gw:1080\n    tls_ca: ca.pem", "are for a socks5+tls:// via"),
        ("via: socks5+tls://gw:1443\n    tls_certificate: me.pem", "needs both tls_certificate and tls_key"),
        ("via: socks5+tls://gw:1443\n    tls_server_name: \"gw\\r\\nx\"", "is not a host name or an IP address"),
    ])
    func aViaTLSThatCannotWorkIsRefused(lines: String, message: String) {
        let found = error("rules:\n  - action: allow\n    \(lines)\n")
        #expect(found.contains(message), "\(found)")
    }
}
