import NIOCore

/// Timeouts per phase of a session.
public struct Timeouts: Sendable, Hashable {
    /// From accept until the request is complete (slow or silent clients are closed).
    public var negotiation: TimeAmount = .seconds(10)
    /// For the request as a whole: the name lookup and the outbound connection (all addresses of
    /// a name included).
    public var connect: TimeAmount = .seconds(10)
    /// For one name lookup; past it the client gets reply 0x04 (host unreachable).
    public var dns: TimeAmount = .seconds(5)
    /// How long a BIND waits for its peer to connect; past it the client gets reply 0x06.
    public var bind: TimeAmount = .minutes(2)
    /// A relayed session with no byte moving either way for this long is closed; nil never.
    public var idle: TimeAmount? = .minutes(30)
    /// On SIGTERM/SIGINT, how long running sessions may go on before they are closed.
    public var shutdownGrace: TimeAmount = .seconds(10)
    /// On SIGTERM/SIGINT, how long to go on accepting while `/readyz` says 503, before the
    /// listeners close: a load balancer's health checks take the instance out first, so no
    /// connection it sends is refused or reset (those queued on a closing listener would be).
    public var shutdownDelay: TimeAmount = .zero

    public init() {}
}

extension Timeouts {
    mutating func read(_ section: inout ConfigSection) {
        section.duration("negotiation", into: &negotiation)
        section.duration("connect", into: &connect)
        section.duration("dns", into: &dns)
        section.duration("bind", into: &bind)
        section.duration("idle", into: &idle)
        section.durationOrZero("shutdown_grace", into: &shutdownGrace)
        section.durationOrZero("shutdown_delay", into: &shutdownDelay)
    }
}
