/// How a `socks5+tls` upstream is reached: the CA its certificate must chain to (nil: the system's
/// CAs), the name it must carry (nil: the URL's host), and the certificate this proxy shows it.
public struct UpstreamTLS: Hashable, Sendable {
    public var ca: String?
    public var serverName: String?
    public var certificate: String?
    public var key: String?

    public init(ca: String? = nil, serverName: String? = nil, certificate: String? = nil, key: String? = nil) {
        self.ca = ca
        self.serverName = serverName
        self.certificate = certificate
        self.key = key
    }
}

/// Another proxy a rule sends its CONNECT sessions through: `socks5://[user:password@]host:port`,
/// `socks5+tls://...` (SOCKS5 inside TLS) or `http://[user:password@]host:port` (HTTP CONNECT).
public struct UpstreamProxy: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable {
        case socks5
        case http
    }

    public var kind: Kind
    /// An IP literal or a name.
    public var host: String
    public var port: UInt16
    public var username: String?
    public var password: String?
    /// Set for `socks5+tls`: the connection to the upstream is TLS, SOCKS5 inside.
    public var tls: UpstreamTLS?

    public init(kind: Kind, host: String, port: UInt16, username: String? = nil, password: String? = nil) {
        self.kind = kind
        self.host = host
        self.port = port
        self.username = username
        self.password = password
    }

    /// The URL without credentials: what logs show.
    public var description: String {
        let shown = host.contains(":") ? "[\(host)]" : host
        return "\(kind.rawValue)\(tls == nil ? "" : "+tls")://\(shown):\(port)"
    }
}
