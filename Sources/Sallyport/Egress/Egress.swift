import Logging
import NIOCore
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// Where a destination may be reached, as the egress path decided it.
enum EgressDecision: Sendable {
    /// These addresses (with the destination's port) may be used, in the resolver's order; `rule`
    /// allowed the first of them, and its `route` (nil: the default route) says how to leave.
    case allowed([SocketAddress], rule: Policy.Reason, route: EgressRoute?)
    /// The policy refuses the destination: reply 0x02.
    case denied(Policy.Reason)
    /// A rule that sends its sessions through an upstream proxy (its `route`) allowed the name
    /// itself: the name goes there unresolved.
    case upstream(rule: Policy.Reason, route: EgressRoute)
    /// The name could not be resolved for this client now (no answer, no address, over its share
    /// of lookups, the queue full): reply 0x04. `transient` when asking again later may succeed.
    case unresolved(String, transient: Bool)
    /// The session that asked has ended.
    case cancelled
}

/// The one way from "this subject wants host:port for command C" to "these addresses, allowed by
/// rule R, leaving by route X", for CONNECT and for every UDP destination alike: the name check (a
/// deny needs no lookup), the lookup (through the shared resolver and its cache), then every
/// address against the rules and the special-address guard.
struct Egress: Sendable {
    /// The policy, with its rules as an index: what decisions go through. (A reference: every
    /// session holds a copy of this struct, which stays a few words.)
    let compiled: CompiledPolicy
    let resolver: any NameResolving
    /// How sessions leave when their rule names no route (a reference, made once).
    private let defaults: Defaults

    private final class Defaults: Sendable {
        let route: EgressRoute?
        let binding: OutboundBinding?

        init(_ route: EgressRoute?) {
            self.route = route
            self.binding = route.map(OutboundBinding.init)
        }
    }

    init(policy: Policy, resolver: any NameResolving) {
        self.compiled = CompiledPolicy(policy)
        self.resolver = resolver
        self.defaults = Defaults(policy.defaultRoute)
    }

    /// The upstream proxy of a decision's route (or of the default route).
    func upstream(for route: EgressRoute?) -> UpstreamProxy? {
        route?.via ?? defaults.route?.via
    }

    /// Where the sessions of a decision's route leave from: the route's, else the default's.
    func binding(for route: EgressRoute?) -> OutboundBinding? {
        guard let route else { return defaults.binding }
        return OutboundBinding(route)
    }

    /// The decision when it needs no lookup: an IP literal, or a name that a rule refuses by name.
    /// Nil when the name must be looked up (`resolve`).
    func decideAtOnce(_ destination: SOCKSEndpoint, command: SOCKSCommand, subject: PolicySubject) -> EgressDecision? {
        switch destination.host {
        case .ipv4, .ipv6:
            guard let address = destination.socketAddress else { return .unresolved("not an address", transient: false) }
            return check([address], name: nil, port: destination.port, command: command, subject: subject)
        case .domain(let name):
            switch compiled.checkName(name, port: destination.port, command: command, subject: subject) {
            case .deny(let reason): return .denied(reason)
            // UDP has no upstream: its datagrams go direct, to the name's addresses. A loopback
            // name is looked up here, so that the guard judges its addresses: the upstream would
            // take it for its own loopback.
            case .upstream(let rule, let route) where command == .connect && !DestinationName.isLoopbackName(name):
                return .upstream(rule: rule, route: route)
            case .upstream, .resolve: return nil
            }
        }
    }

    /// Looks up a name that `decideAtOnce` passed, then checks its addresses.
    func resolve(
        _ name: String, port: UInt16, command: SOCKSCommand, subject: PolicySubject, client: ClientNetwork, ticket: LookupTicket?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<EgressDecision> {
        resolver.resolve(name, client: client, ticket: ticket, on: eventLoop).map { outcome in
            switch outcome {
            case .resolved(let ips):
                return check(ips.map { $0.socketAddress(port: Int(port)) }, name: name, port: port, command: command, subject: subject)
            case .failed(let reason): return .unresolved("cannot resolve \(name): \(reason)", transient: false)
            case .timedOut: return .unresolved("cannot resolve \(name): no answer in time", transient: true)
            case .overShare: return .unresolved("cannot resolve \(name): this client has its share of lookups in flight", transient: true)
            case .overloaded: return .unresolved("cannot resolve \(name): the lookup queue is full", transient: true)
            case .cancelled: return .cancelled
            }
        }
    }

    /// Both steps, for callers that take a future either way (UDP destinations).
    func route(
        _ destination: SOCKSEndpoint, command: SOCKSCommand, subject: PolicySubject, client: ClientNetwork, ticket: LookupTicket?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<EgressDecision> {
        if let decided = decideAtOnce(destination, command: command, subject: subject) { return eventLoop.makeSucceededFuture(decided) }
        guard case .domain(let name) = destination.host else { return eventLoop.makeSucceededFuture(.cancelled) }
        return resolve(name, port: destination.port, command: command, subject: subject, client: client, ticket: ticket, on: eventLoop)
    }

    /// Every address against the rules; only those that pass may be used.
    private func check(_ addresses: [SocketAddress], name: String?, port: UInt16, command: SOCKSCommand, subject: PolicySubject) -> EgressDecision {
        let ips = addresses.compactMap(IPAddress.init)
        switch compiled.checkAddresses(ips, name: name, port: port, command: command, subject: subject) {
        case .deny(let reason):
            return .denied(reason)
        case .allow(let allowed, let reason, let route):
            if allowed.count == ips.count { return .allowed(addresses, rule: reason, route: route) }
            return .allowed(addresses.filter { IPAddress($0).map(allowed.contains) ?? false }, rule: reason, route: route)
        }
    }
}

/// The one way a refused destination reaches the log: at most one line per `interval` for one
/// session, naming how many were refused since the last line. Nothing a client sends can make more
/// lines than that; the session's access-log line carries the totals. Lives on one event loop.
struct RefusalNotice {
    let logger: Logger
    let interval: TimeAmount
    private var lastLine: NIODeadline?
    private(set) var unlogged = 0

    init(logger: Logger, interval: TimeAmount = .seconds(10)) {
        self.logger = logger
        self.interval = interval
    }

    /// Counts a refusal; writes a line (`message`) if none was written in the last `interval`.
    mutating func refused(
        _ message: Logger.Message, _ destination: SOCKSEndpoint, reason: String, command: SOCKSCommand, session: String, user: String?,
        client: String, now: NIODeadline = .now()
    ) {
        unlogged += 1
        if let lastLine, now - lastLine < interval { return }
        lastLine = now
        var metadata: Logger.Metadata = [
            "session": "\(session)", "user": "\(user ?? "-")", "client": "\(client)", "cmd": "\(command)", "dst": "\(destination)",
            "rule": "\(reason)",
        ]
        if unlogged > 1 { metadata["refused"] = .stringConvertible(unlogged) }
        logger.notice(message, metadata: metadata)
        unlogged = 0
    }
}

extension OutboundBinding {
    init(_ route: EgressRoute) {
        self.init(address: route.address, interface: route.interface)
    }
}

extension EgressDecision {
    /// What a UDP destination's datagrams get for this decision, and why it was refused when it
    /// was (for the session's refusal notice).
    func udpGate(_ egress: Egress) -> (UDPGateAnswer, refusal: String?) {
        switch self {
        case .allowed(let addresses, _, let route):
            let binding = egress.binding(for: route)
            guard let address = addresses.first(where: { binding?.reaches($0) ?? true }) else {
                return (.refused, "no address of the egress address's family")
            }
            return (.send(address, binding), nil)
        case .denied(let reason): return (.refused, reason.description)
        // Not for UDP: `decideAtOnce` resolves UDP destinations whatever the rule.
        case .upstream: return (.dropped, nil)
        case .unresolved(let reason, let transient): return (transient ? .dropped : .refused, reason)
        case .cancelled: return (.dropped, nil)
        }
    }
}
