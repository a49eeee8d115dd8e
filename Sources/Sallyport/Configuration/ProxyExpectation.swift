import NIOCore
import SOCKSProtocol
import SallyportPolicy

/// A listener behind a load balancer: the PROXY protocol header it expects before the greeting,
/// and the balancers' addresses it takes one from (a connection from anywhere else is closed).
public struct ProxyExpectation: Sendable, Hashable {
    public var version: ProxyProtocolVersion
    public var trusted: [CIDR]

    public init(version: ProxyProtocolVersion, trusted: [CIDR]) {
        self.version = version
        self.trusted = trusted
    }

    /// Whether `address` is one of the trusted balancers.
    public func trusts(_ address: IPAddress) -> Bool {
        let address = address.unmapped
        return trusted.contains { $0.contains(address) }
    }

    /// `proxy_protocol` and `trusted_proxies` of a listener entry; both or neither.
    static func read(_ entry: inout ConfigSection, _ item: YAMLNode) -> ProxyExpectation? {
        var version: ProxyProtocolVersion?
        if let text = entry.string("proxy_protocol") {
            version = ProxyProtocolVersion(rawValue: text)
            if version == nil { entry.report(entry.node("proxy_protocol"), "proxy_protocol", "'\(text)' is not v1, v2 or any") }
        }
        let trusted = entry.list("trusted_proxies") { text in
            CIDR(text).map { .success($0) } ?? .failure(ConfigValues.Message("'\(text)' is not an address block (as 10.0.0.0/8)"))
        }
        switch (version, trusted) {
        case (let version?, let trusted?): return ProxyExpectation(version: version, trusted: trusted)
        case (.some, nil):
            entry.problems.report(item, entry.path, "proxy_protocol needs trusted_proxies: the load balancers' addresses, as [10.0.0.0/8]")
        case (nil, .some):
            entry.problems.report(item, entry.path, "trusted_proxies is for proxy_protocol: set proxy_protocol: v1, v2 or any")
        case (nil, nil): break
        }
        return nil
    }
}

/// What reading a PROXY protocol header from the front of a session's bytes came to.
enum ProxyHeaderStep {
    /// Not all there yet: nothing consumed.
    case incomplete
    case refused(ProxyHeaderError)
    /// A LOCAL connection: the balancer's own health check, with nothing to serve.
    case local
    /// The client the balancer speaks for.
    case client(SocketAddress)
}

extension ByteBuffer {
    /// Takes a header of `version` off the front of the buffer.
    mutating func takeProxyHeader(_ version: ProxyProtocolVersion) -> ProxyHeaderStep {
        do {
            guard let header = try readProxyHeader(version) else { return .incomplete }
            guard let source = header.source, let client = source.socketAddress else { return .local }
            return .client(client)
        } catch {
            return .refused(error)
        }
    }
}
