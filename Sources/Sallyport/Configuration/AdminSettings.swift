import NIOCore
import SOCKSProtocol

/// The admin listener (HTTP): metrics, health, live sessions, a PAC file and a status page. Off
/// unless `admin.listen` is set.
public struct AdminSettings: Sendable, Hashable {
    /// The address to listen on (an IP literal); nil: no admin listener.
    public var host: String?
    public var port = 9180
    /// Let the admin listener be on a non-loopback address (then `token` is required too).
    public var allowRemote = false
    /// A bearer token every request must carry (`Authorization: Bearer TOKEN`); nil: none asked.
    public var token: String?
    /// Per-user metric series, for authenticated identities only.
    public var perUserMetrics = false
    /// Users given series of their own; the numbers of any more go to `user="other"`.
    public var perUserMetricsLimit = 500
    /// What `/proxy.pac` points browsers at.
    public var pac = PACSettings()
    /// Host names requests may name in `Host` besides IP literals and `localhost` (the names an
    /// operator reaches the admin listener by); any other is answered 421, which keeps a web page
    /// that rebinds its own name to this address from reading or changing anything.
    public var hosts: [String] = []
    /// Connections open at once; more are closed at accept.
    public var maxConnections = 64
    /// How long a connection may stay silent between requests.
    public var idleTimeout: TimeAmount = .seconds(60)
    /// How long a request may take to arrive whole and be answered, from its first byte.
    public var requestTimeout: TimeAmount = .seconds(10)

    public init() {}

    /// The bounds each admin connection lives within.
    var connectionLimits: (maximum: Int, idle: TimeAmount, request: TimeAmount) { (maxConnections, idleTimeout, requestTimeout) }

    /// Whether an admin listener is configured.
    public var enabled: Bool { host != nil }

    /// `host:port` of the admin listener, with an IPv6 host in brackets.
    public var addressDescription: String {
        let host = host ?? "-"
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Whether the admin listener is on a loopback address.
    public var isLoopback: Bool { host.map { IPAddress($0)?.isLoopback ?? false } ?? true }
}

/// The PAC file's settings.
public struct PACSettings: Sendable, Hashable {
    /// The proxy address browsers are told to use; nil: the first SOCKS listener's.
    public var host: String?
    public var port: Int?
    /// Host names (`intranet.example.com`), domains (`.example.com`) and IPv4 blocks
    /// (`10.0.0.0/8`) that browsers reach directly.
    public var direct: [String] = []

    public init() {}
}

extension AdminSettings {
    mutating func read(_ section: inout ConfigSection) {
        if let address = section.value("listen", { text in
            ConfigurationLoader.parseListenAddress(text).mapError { ConfigValues.Message($0.description) }
        }) {
            host = address.host
            port = address.port
        }
        section.bool("allow_remote", into: &allowRemote)
        if let token = section.value("token", { token in
            token.count >= 16 && !token.contains(where: \.isWhitespace)
                ? .success(token) : .failure(ConfigValues.Message("the token must be 16 or more characters, without spaces"))
        }) {
            self.token = token
        }
        section.bool("per_user_metrics", into: &perUserMetrics)
        section.integer("per_user_metrics_limit", range: 1...100_000, into: &perUserMetricsLimit)
        if let hosts = section.list("hosts", { text in
            DestinationName.normalized(text.utf8).map { .success($0) }
                ?? .failure(ConfigValues.Message("'\(text)' is not a host name; list the names the admin listener is reached by (admin.example.com)"))
        }) {
            self.hosts = hosts
        }
        section.integer("max_connections", range: 1...100_000, into: &maxConnections)
        section.duration("idle_timeout", into: &idleTimeout)
        section.duration("request_timeout", into: &requestTimeout)
        section.section("pac") { pac.read(&$0) }
    }
}

extension PACSettings {
    mutating func read(_ section: inout ConfigSection) {
        if let host = section.string("host") { self.host = host }
        var port = self.port ?? 0
        section.integer("port", range: 1...65_535, into: &port)
        if port > 0 { self.port = port }
        if let direct = section.list("direct", { .success($0) }) { self.direct = direct }
    }
}
