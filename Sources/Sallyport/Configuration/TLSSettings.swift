import SallyportAuth
import SallyportPolicy

/// A listener's `tls:` section: SOCKS runs inside TLS 1.2 or 1.3 there. Paths are relative to the
/// configuration file; the files are read at start and again at every reload.
public struct ListenerTLSSettings: Sendable, Hashable {
    /// The certificate chain, PEM: the server's certificate first, then intermediates.
    public var certificate: String
    /// The private key, PEM, unencrypted.
    public var key: String
    /// CA certificates (PEM) that client certificates must chain to; when set, every client must
    /// present one, and a session that negotiates method `none` is the certificate's user.
    public var clientCA: String?
    /// A certificate revocation list (PEM or DER) of the client CA.
    public var crl: String?
    /// Which part of a client certificate names its user.
    public var identity: CertificateIdentityField = .cn
    /// Groups of certificate users, for rules (`group:`); the user file's groups are added.
    public var groups: [String: [String]] = [:]
    /// The lowest TLS version accepted: "1.2" or "1.3".
    public var minimumVersion = "1.2"

    public init(certificate: String, key: String) {
        self.certificate = certificate
        self.key = key
    }

    static func read(_ entry: inout ConfigSection) -> ListenerTLSSettings? {
        var settings: ListenerTLSSettings?
        let node = entry.node("tls")
        entry.section("tls") { tls in
            let certificate = tls.string("certificate").map(tls.problems.resolve)
            let key = tls.string("key").map(tls.problems.resolve)
            var read = ListenerTLSSettings(certificate: certificate ?? "", key: key ?? "")
            read.clientCA = tls.string("client_ca").map(tls.problems.resolve)
            read.crl = tls.string("crl").map(tls.problems.resolve)
            tls.choice("identity", into: &read.identity)
            if let version = tls.string("min_version") {
                if version == "1.2" || version == "1.3" {
                    read.minimumVersion = version
                } else {
                    tls.report(tls.node("min_version"), "min_version", "'\(version)' is not 1.2 or 1.3")
                }
            }
            if let node = tls.node("groups") { read.groups = Self.groups(node, tls.keyPath("groups"), tls.problems) }
            if certificate == nil || key == nil {
                tls.problems.report(node, tls.path, "tls needs certificate and key: the PEM files of the server's certificate chain and its private key")
                return
            }
            if read.crl != nil, read.clientCA == nil {
                tls.report(tls.node("crl"), "crl", "a CRL revokes client certificates: set client_ca too")
            }
            if !read.groups.isEmpty, read.clientCA == nil {
                tls.report(tls.node("groups"), "groups", "groups are for certificate users: set client_ca too")
            }
            settings = read
        }
        return settings
    }

    /// What the listeners' TLS settings make impossible. (The files themselves are read, and
    /// their pairs, permissions and dates checked, when the server loads them: `ServerTLS`.)
    static func check(_ listeners: [ListenerConfiguration], into findings: inout ConfigurationFindings) {
        for listener in listeners where listener.certificateMethod && listener.tls?.clientCA == nil {
            findings.errors.append((
                "\(listener.addressDescription) offers method 'certificate', which takes the user from a client certificate: give the listener tls: {certificate, key, client_ca}",
                listener))
        }
    }

    /// `groups: {alice: [staff, ops]}`: the groups of each certificate user.
    private static func groups(_ node: YAMLNode, _ path: String, _ problems: ConfigProblems) -> [String: [String]] {
        guard case .mapping(let pairs, _) = node else {
            problems.report(node, path, "expected a mapping of user to groups, as {alice: [staff]}")
            return [:]
        }
        var result: [String: [String]] = [:]
        for (key, value) in pairs {
            guard let user = ConfigValues.scalar(key, path, problems) else { continue }
            let itemPath = "\(path).\(user)"
            let groups = ConfigValues.list(value, itemPath, problems) { name -> Result<String, ConfigValues.Message> in
                Self.isName(name) ? .success(name) : .failure(.init("'\(name)' is not a group name (printable, no spaces or commas)"))
            }
            guard (1...255).contains(user.utf8.count), !user.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) else {
                problems.report(key, itemPath, "'\(user)' is not a user name a certificate can carry (printable, 1 to 255 bytes)")
                continue
            }
            result[user] = groups ?? []
        }
        return result
    }

    private static func isName(_ text: String) -> Bool {
        (1...255).contains(text.utf8.count) && !text.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7F || $0 == "," }
    }
}
