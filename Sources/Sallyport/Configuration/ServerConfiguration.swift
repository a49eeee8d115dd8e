import NIOCore
import SOCKSProtocol
import SallyportAuth
import SallyportPolicy

/// Everything the server is told by its configuration file (or the embedded default).
public struct ServerConfiguration: Sendable, Hashable {
    /// Where to accept clients.
    public var listeners: [ListenerConfiguration]
    public var timeouts: Timeouts
    public var limits: Limits
    public var log: LogConfiguration
    public var relay: RelaySettings
    public var auth: AuthenticationSettings
    public var udp: UDPSettings
    public var dns = DNSSettings()
    /// BIND's listening sockets.
    public var bind = BindSettings()
    /// The admin listener (metrics, sessions, status page); off by default.
    public var admin = AdminSettings()
    /// Per-user usage totals, where they are saved, and quotas.
    public var usage = UsageSettings()
    /// Let a listener on a non-loopback address offer method `none` (an open proxy for whoever
    /// reaches it). Off by default: such a configuration is refused.
    public var allowUnauthenticatedRemote: Bool
    /// Who may connect, and who may reach what.
    public var policy: Policy
    /// Things worth saying about a valid configuration (as: it has no rules, so allows nothing).
    public var warnings: [String] = []

    public init(
        listeners: [ListenerConfiguration] = [ListenerConfiguration(host: "127.0.0.1", port: 1080)],
        timeouts: Timeouts = Timeouts(),
        limits: Limits = Limits(),
        log: LogConfiguration = LogConfiguration(),
        relay: RelaySettings = RelaySettings(),
        auth: AuthenticationSettings = AuthenticationSettings(),
        allowUnauthenticatedRemote: Bool = false,
        policy: Policy = .allowPublic,
        udp: UDPSettings = UDPSettings()
    ) {
        self.udp = udp
        self.policy = policy
        self.listeners = listeners
        self.timeouts = timeouts
        self.limits = limits
        self.log = log
        self.relay = relay
        self.auth = auth
        self.allowUnauthenticatedRemote = allowUnauthenticatedRemote
    }

    /// Whether the rules came from the file (or the code), rather than the default rule.
    var hasOwnRules: Bool { policy.rules != Policy.allowPublic.rules }

    /// True when some listener offers username/password.
    public var usesUsernameMethod: Bool {
        listeners.contains { $0.methods.contains(.usernamePassword) }
    }

    /// What checks the logins of `listener`: its own `auth`, else the user file when there is one.
    public func checker(for listener: ListenerConfiguration) -> LoginChecker {
        listener.checker ?? (auth.file != nil ? .file : .pam)
    }

    /// The checkers some listener offering username/password uses.
    public var checkersInUse: Set<LoginChecker> {
        Set(listeners.filter { $0.methods.contains(.usernamePassword) }.map { checker(for: $0) })
    }

    /// The embedded default: loopback only, method none, every public destination allowed and the
    /// special-address guard on.
    public static let embeddedDefault = ServerConfiguration()
}

/// One listening address and what it offers.
public struct ListenerConfiguration: Sendable, Hashable {
    /// An IP address literal (`127.0.0.1`, `::1`, `0.0.0.0`, `::`).
    public var host: String
    /// The port; 0 binds a free one.
    public var port: Int
    /// The authentication methods offered, most preferred first.
    public var methods: [AuthenticationMethod]
    /// A PROXY protocol header expected before the greeting (a load balancer in front), and the
    /// balancers it is taken from.
    public var proxyProtocol: ProxyExpectation?
    /// Serve SOCKS4 and SOCKS4a CONNECT too, anonymously (SOCKS4 carries no password).
    public var socks4 = false
    /// What checks this listener's logins; nil: the user file when `auth.file` is set, else PAM.
    public var checker: LoginChecker?
    /// SOCKS inside TLS, with the listener's certificate (and client certificates, when asked for).
    public var tls: ListenerTLSSettings?
    /// `methods` names `certificate`: method `none` on the wire, the user from the client
    /// certificate (needs `tls.client_ca`).
    public var certificateMethod = false
    /// Where the file gives it, for errors.
    var line: Int?
    var column: Int?

    public init(host: String, port: Int, methods: [AuthenticationMethod] = [.none]) {
        self.host = host
        self.port = port
        self.methods = methods
    }

    /// Listeners are the same when they listen alike, wherever the file wrote them.
    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.host == rhs.host && lhs.port == rhs.port && lhs.methods == rhs.methods && lhs.proxyProtocol == rhs.proxyProtocol
            && lhs.socks4 == rhs.socks4 && lhs.checker == rhs.checker && lhs.tls == rhs.tls && lhs.certificateMethod == rhs.certificateMethod
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(host)
        hasher.combine(port)
        hasher.combine(methods)
        hasher.combine(proxyProtocol)
        hasher.combine(socks4)
        hasher.combine(checker)
        hasher.combine(tls)
    }

    /// `host:port`, with an IPv6 host in brackets.
    public var addressDescription: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// True for 127.0.0.0/8 and ::1 (also in IPv4-mapped form): reachable from this host only.
    public var isLoopback: Bool {
        IPAddress(host)?.isLoopback ?? false
    }
}

/// What is wrong with a configuration, or worth saying about it.
public struct ConfigurationFindings: Sendable {
    /// Each makes the configuration unusable; the listener it concerns, if any.
    public var errors: [(message: String, listener: ListenerConfiguration?)] = []
    public var warnings: [String] = []
}

extension ServerConfiguration {
    /// The one check of a whole configuration, for the loader, the server (start and reload) and
    /// `check-config` alike. `externalAuthenticator`: the caller checks logins itself (tests).
    public func validate(externalAuthenticator: Bool = false) -> ConfigurationFindings {
        var findings = ConfigurationFindings()
        if !allowUnauthenticatedRemote {
            // Behind a PROXY-protocol balancer the clients are remote whatever the bound address.
            // A verified client certificate is a login: method none is not open there.
            let open = listeners.filter { $0.methods.contains(.none) && $0.tls?.clientCA == nil }
            for listener in open where listener.proxyProtocol != nil && listener.isLoopback {
                findings.errors.append((
                    "\(listener.addressDescription) takes its clients from a PROXY-protocol balancer, so they are not local, but offers method 'none', which would make an open proxy; offer [username] there, or set allow_unauthenticated_remote: true if that is really meant",
                    listener))
            }
            for listener in open where !listener.isLoopback {
                findings.errors.append((
                    "\(listener.addressDescription) is not a loopback address but offers method 'none', which would make an open proxy; offer [username] there, or set allow_unauthenticated_remote: true if that is really meant",
                    listener))
            }
            for listener in listeners where listener.socks4 && !listener.isLoopback {
                findings.errors.append((
                    "\(listener.addressDescription) is not a loopback address but serves socks4, which carries no password: anyone who reaches it gets the rules for anonymous; set allow_unauthenticated_remote: true if that is really meant",
                    listener))
            }
        }
        for listener in listeners where listener.socks4 && !listener.methods.contains(.none) {
            findings.errors.append((
                "\(listener.addressDescription) asks for a login (methods: [username]) but serves socks4, which carries no password: SOCKS4 clients would get in without one; serve socks4 on a listener of its own with method none, or remove socks4",
                listener))
        }
        for listener in listeners {
            for block in listener.proxyProtocol?.trusted ?? [] where block.prefixLength == 0 {
                findings.errors.append((
                    "trusted_proxies holds \(block): any host could send a PROXY header and claim any client address, escaping client rules, throttling and per-client limits; list your balancers' addresses",
                    listener))
            }
        }
        // RFC 1929 sends the password in clear; with PAM it is the user's system password.
        for listener in listeners where listener.methods.contains(.usernamePassword) && !listener.isLoopback && listener.tls == nil {
            findings.warnings.append(
                "\(listener.addressDescription) takes logins off loopback without TLS: RFC 1929 sends user names and passwords in clear (with PAM, the users' system passwords), readable by anyone on the path; give this listener tls: {certificate: FILE, key: FILE} and point clients at it with socks5+tls (or reach it through a VPN or SSH tunnel)")
        }
        ListenerTLSSettings.check(listeners, into: &findings)
        if admin.enabled, !admin.isLoopback {
            if !admin.allowRemote || admin.token == nil {
                findings.errors.append((
                    "admin.listen: \(admin.addressDescription) is not a loopback address; the admin listener can close sessions and shows who uses the proxy, so serve it there only with admin.allow_remote: true and an admin.token",
                    nil))
            }
        }
        if checkersInUse.contains(.pam), !externalAuthenticator, auth.pam.service.isEmpty {
            findings.errors.append(("a listener offers method 'username' but auth.pam.service is empty", nil))
        }
        for listener in listeners where listener.checker == .file && auth.file == nil {
            findings.errors.append(("auth: file, but there is no user file: set auth.file to its path", listener))
        }
        if auth.file != nil, !checkersInUse.contains(.file) {
            findings.warnings.append("auth.file is set, but no listener offering method 'username' checks logins with it")
        }
        findings.warnings += auth.warnings
        if !usage.quotas.isEmpty, !usesUsernameMethod {
            findings.warnings.append("quotas are set, but no listener offers method 'username': quotas count only authenticated users")
        }
        for (rule, block, closed) in policy.specialRangesLeftClosed() {
            let names = closed.map(\.description)
            let shown = names.count > 4 ? names.prefix(4).joined(separator: ", ") + " and \(names.count - 4) more" : names.joined(separator: ", ")
            findings.warnings.append(
                "rule \(rule): \(block) holds special ranges that stay closed (\(shown)): a block opens a special range only when it lies inside it; name a range (as to: [\(closed[0])]) to open it")
        }
        for (rule, file, blocks) in policy.specialRangesOpenedByFiles() {
            let shown = blocks.count > 4 ? blocks.prefix(4).map(\.description).joined(separator: ", ") + " and \(blocks.count - 4) more" : blocks.map(\.description).joined(separator: ", ")
            findings.warnings.append(
                "rule \(rule): \(file) lists special ranges (\(shown)), which this allow rule opens: private, loopback or metadata addresses become reachable through the proxy; if that is meant, name them in the rule itself (to: [\(blocks[0])])")
        }
        findings.warnings += egressRouteWarnings()
        if timeouts.shutdownDelay + timeouts.shutdownGrace > .seconds(40) {
            findings.warnings.append(
                "timeouts.shutdown_delay and shutdown_grace add up to more than 40 s: the packaged systemd unit kills the process 45 s after SIGTERM (TimeoutStopSec); raise it with a drop-in, or shorten them")
        }
        if policy.rules.isEmpty && policy.defaultAction == .deny {
            findings.warnings.append("no rules, and default_action is deny: every request will be refused; add rules (see conf/sallyport.yaml)")
        }
        return findings
    }

    /// What the rules allow, in a sentence: for `check-config`.
    public var policySummary: String {
        guard hasOwnRules else {
            return "no rules in the file: the default rule applies (every public destination, for everyone; loopback, private and other special addresses stay closed); \(bindSummary)"
        }
        return "\(policy.rules.count) rule(s), default \(policy.defaultAction.rawValue); \(bindSummary)"
    }

    /// Whether anyone may BIND: only an allow rule that names `bind` in its commands lets them.
    var bindSummary: String {
        let allowing = policy.rules.enumerated().filter { $1.action == .allow && $1.commands?.contains(.bind) == true }
        guard !allowing.isEmpty else { return "BIND refused to everyone (reply 0x02): no allow rule has commands: [bind]" }
        return "BIND allowed by \(allowing.map { $1.label(index: $0) }.joined(separator: ", "))"
    }

    /// Reads the whole file: each section by the settings type it belongs to.
    mutating func read(_ root: inout ConfigSection) {
        var defaultMethods: [AuthenticationMethod] = [.none]
        var certificate = false
        if let node = root.node("methods") {
            defaultMethods = ListenerConfiguration.methods(node, root.keyPath("methods"), root.problems) ?? defaultMethods
            certificate = ListenerConfiguration.namesCertificate(node)
        }
        if let node = root.node("listen") {
            listeners = ListenerConfiguration.listeners(
                node, root.keyPath("listen"), root.problems, defaultMethods: defaultMethods, defaultMethodsNameCertificate: certificate)
        } else {
            listeners = listeners.map {
                var listener = ListenerConfiguration(host: $0.host, port: $0.port, methods: defaultMethods)
                listener.certificateMethod = certificate
                return listener
            }
        }
        root.bool("allow_unauthenticated_remote", into: &allowUnauthenticatedRemote)
        root.section("auth") { auth.read(&$0) }
        policy.read(&root)
        root.section("timeouts") { timeouts.read(&$0) }
        root.section("limits") { limits.read(&$0) }
        root.section("relay") { relay.read(&$0) }
        root.section("log") { log.read(&$0) }
        root.section("udp") { udp.read(&$0) }
        root.section("dns") { dns.read(&$0) }
        root.section("bind") { bind.read(&$0) }
        root.section("admin") { admin.read(&$0) }
        usage.read(&root)
    }
}

extension ListenerConfiguration {
    static func listeners(
        _ node: YAMLNode, _ path: String, _ problems: ConfigProblems, defaultMethods: [AuthenticationMethod], defaultMethodsNameCertificate: Bool
    ) -> [ListenerConfiguration] {
        guard case .sequence(let sequence, _) = node, !sequence.isEmpty else {
            problems.report(node, path, "expected a list of addresses, as [127.0.0.1:1080, \"[::1]:1080\"]")
            return []
        }
        var result: [ListenerConfiguration] = []
        for (index, item) in sequence.enumerated() {
            let itemPath = "\(path)[\(index)]"
            var addressNode = item
            var addressPath = itemPath
            var methods = defaultMethods
            var proxy: ProxyExpectation?
            var socks4 = false
            var checker: LoginChecker?
            var tls: ListenerTLSSettings?
            var certificateMethod = defaultMethodsNameCertificate
            if case .mapping = item {
                var entry = ConfigSection(item, path: itemPath, problems: problems)
                let address = entry.node("address")
                if let node = entry.node("methods") {
                    methods = self.methods(node, entry.keyPath("methods"), problems) ?? methods
                    certificateMethod = namesCertificate(node)
                }
                tls = ListenerTLSSettings.read(&entry)
                proxy = ProxyExpectation.read(&entry, item)
                entry.bool("socks4", into: &socks4)
                checker = entry.value("auth") { text in
                    LoginChecker(rawValue: text).map { .success($0) } ?? .failure(.init("'\(text)' is not pam or file"))
                }
                entry.finish()
                guard let address else {
                    problems.report(item, itemPath, "missing key 'address' (HOST:PORT)")
                    continue
                }
                addressNode = address
                addressPath = itemPath + ".address"
            }
            guard let text = ConfigValues.scalar(addressNode, addressPath, problems) else { continue }
            switch ConfigurationLoader.parseListenAddress(text) {
            case .success(let address):
                var listener = ListenerConfiguration(host: address.host, port: address.port, methods: methods)
                listener.proxyProtocol = proxy
                listener.socks4 = socks4
                listener.checker = checker
                listener.tls = tls
                listener.certificateMethod = certificateMethod
                listener.line = item.mark?.line
                listener.column = item.mark?.column
                result.append(listener)
            case .failure(let error):
                problems.report(addressNode, addressPath, error.description)
            }
        }
        return result
    }

    static func methods(_ node: YAMLNode, _ path: String, _ problems: ConfigProblems) -> [AuthenticationMethod]? {
        guard case .sequence(let sequence, _) = node, !sequence.isEmpty else {
            problems.report(node, path, "expected a non-empty list of methods, as [none] or [username, none]")
            return nil
        }
        var result: [AuthenticationMethod] = []
        for (index, item) in sequence.enumerated() {
            guard let name = ConfigValues.scalar(item, "\(path)[\(index)]", problems) else { continue }
            let method: AuthenticationMethod
            switch name {
            case "none": method = .none
            case "username": method = .usernamePassword
            // Method none on the wire; the user comes from the verified client certificate.
            case "certificate": method = .none
            default:
                problems.report(item, "\(path)[\(index)]", "unknown method '\(name)'; known methods: none, username, certificate")
                continue
            }
            if result.contains(method) {
                problems.report(item, "\(path)[\(index)]", method == .none ? "none and certificate are one SOCKS method (0x00): list one of them" : "method '\(name)' is listed twice")
            }
            result.append(method)
        }
        return result
    }

    /// Whether a `methods` list names `certificate`.
    static func namesCertificate(_ node: YAMLNode) -> Bool {
        guard case .sequence(let items, _) = node else { return false }
        return items.contains { $0.scalar?.string == "certificate" }
    }
}
