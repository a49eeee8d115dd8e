import Logging
import NIOCore
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// A request being carried out, from its limits to the outbound connection, the relay socket or the
/// peer's connection: limits first (a refused session costs no lookup), the egress decision (with a
/// lookup when the name needs one), then the dial (CONNECT), the relay socket (UDP ASSOCIATE) or
/// the listening socket and its peer (BIND). It holds what it took — the limiter grant, the
/// session's lookups, a BIND's listening socket — until the session's next state takes them over
/// or leaving the state gives them back, and its own timer (`timeouts.connect`, or `timeouts.bind`
/// while a BIND listens) until then; it reports to the session once (a BIND reports that it
/// listens first). Lives on the session's event loop.
final class SessionRequest {
    enum Step: Equatable {
        case admitting
        /// The destination's name is being looked up.
        case resolving
        /// The outbound connection (and an upstream's handshake) is being made.
        case dialing
        /// The UDP relay socket is being opened.
        case binding
        /// A BIND listens (or is opening its socket) for its peer.
        case listening
    }

    enum Outcome {
        /// The outbound connection is up: the session replies and relays.
        case connected(Dialed)
        /// The relay socket is open: the session replies and the association runs.
        case associated(UDPAssociation)
        /// A BIND listens here: the session sends the first reply; more is to come.
        case listening(SocketAddress)
        /// A BIND's peer connected: the session sends the second reply and relays.
        case accepted(Dialed)
        /// Refused or failed: the session replies with the end's code and closes.
        case failed(SessionEnd)

        /// What an outcome nobody waits for any more still holds, closed.
        func discard() {
            switch self {
            case .connected(let dialed), .accepted(let dialed): dialed.channel.close(promise: nil)
            case .associated(let association): association.close(.controlClosed)
            case .listening, .failed: break
            }
        }
    }

    /// Hooks of the association for a UDP ASSOCIATE: its quota allowance, and its end.
    struct AssociationHooks {
        var allowance: ByteAllowance?
        var onEnd: (UDPCounters, UDPRelayEnd) -> Void
    }

    let request: SOCKSRequest
    var step = Step.admitting
    private(set) var grant: SessionLimiter.Grant?
    var ticket: LookupTicket?
    /// `timeouts.connect` while a name is looked up or an upstream dialled (a direct connect has
    /// the connector's own timeout).
    private var timer: Scheduled<Void>?
    /// The rule that allowed the destination, and the upstream it goes through: for the access log.
    var rule: String?
    private(set) var via: String?
    let services: SessionServices
    let subject: PolicySubject
    /// The session's record as it was at the request: names the session in log lines.
    let record: SessionRecord
    private(set) var report: ((Outcome) -> Void)?
    /// A BIND's listening socket, closed when the session moves on.
    var listener: BindListener?
    /// A BIND refused a peer already (logged once).
    var refusedPeer = false

    init(_ request: SOCKSRequest, services: SessionServices, subject: PolicySubject, record: SessionRecord) {
        self.request = request
        self.services = services
        self.subject = subject
        self.record = record
    }

    var client: ClientNetwork { ClientNetwork(record.client) }

    /// Carries the request out on `channel`'s event loop; `report` hears how it went, once.
    func start(on channel: any Channel, association hooks: AssociationHooks?, report: @escaping (Outcome) -> Void) {
        self.report = report
        switch services.limiter.acquire(user: subject.user, client: client, limits: services.limits) {
        case .failure(let refusal):
            services.logger.notice("session limit reached", metadata: record.logFields(["limit": "\(refusal.description)"]))
            return finish(.failed(.limit(refusal)))
        case .success(let grant):
            self.grant = grant
        }
        if let hooks { return associate(on: channel, hooks) }
        if request.command == .bind { return bind(on: channel) }
        let eventLoop = channel.eventLoop
        // The lookup and the connect together get `timeouts.connect`.
        let deadline = eventLoop.now + services.timeouts.connect
        let destination = request.destination
        if let decision = services.egress.decideAtOnce(destination, command: .connect, subject: subject) {
            return dial(decision, deadline: deadline, on: eventLoop)
        }
        // Only a name is left undecided; anything else is a bug reported, never a hang.
        guard case .domain(let name) = destination.host else { return finish(.failed(.requestFailed(.generalFailure))) }
        step = .resolving
        ticket = services.egress.resolver.makeTicket()
        startTimer(deadline, on: eventLoop)
        services.egress.resolve(name, port: destination.port, command: .connect, subject: subject, client: client, ticket: ticket, on: eventLoop)
            .assumeIsolated()
            .whenSuccess { [self] decision in
                guard step == .resolving else { return }
                dial(decision, deadline: deadline, on: eventLoop)
            }
    }

    /// The session moved on: nothing more is dialled or reported (what is still under way is
    /// closed when it arrives).
    func abandon() {
        report = nil
        timer?.cancel()
        timer = nil
        listener?.close()
        listener = nil
    }

    func finish(_ outcome: Outcome) {
        guard let report else { return outcome.discard() }
        self.report = nil
        report(outcome)
    }

    /// `timeouts.connect` ran out while the name was looked up (0x04) or connected to (0x06).
    /// `timeouts.bind` ran out while a BIND listened (0x06).
    func startTimer(_ deadline: NIODeadline, on eventLoop: any EventLoop) {
        guard timer == nil else { return }
        timer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            switch step {
            case .resolving: finish(.failed(.requestFailed(.hostUnreachable)))
            case .dialing: finish(.failed(.requestFailed(.ttlExpired)))
            case .listening:
                services.logger.debug("no BIND peer in time", metadata: record.logFields(["dst": "\(request.destination)"]))
                finish(.failed(.requestFailed(.ttlExpired)))
            case .admitting, .binding: break
            }
        }
    }

    /// Stops the running timer (a BIND's lookup is done; its wait has its own).
    func stopTimer() {
        timer?.cancel()
        timer = nil
    }

    private func dial(_ decision: EgressDecision, deadline: NIODeadline, on eventLoop: any EventLoop) {
        // Nobody waits for an answer any more: nothing is dialled.
        guard report != nil else { return }
        let destination = request.destination
        let addresses: [SocketAddress]?
        let route: EgressRoute?
        switch decision {
        case .cancelled: return
        case .denied(let reason): return deny(reason)
        case .unresolved(let reason, _):
            services.logger.debug("lookup failed", metadata: record.logFields(["dst": "\(destination)", "error": "\(reason)"]))
            return finish(.failed(.requestFailed(.hostUnreachable)))
        case .upstream(let allowedBy, let routed):
            // The name goes to the upstream unresolved.
            (addresses, route, rule) = (nil, routed, allowedBy.description)
        case .allowed(let allowed, let allowedBy, let routed):
            (addresses, route, rule) = (allowed, routed, allowedBy.description)
        }
        let dialer = EgressDialer(egress: services.egress, connector: services.connector, tls: services.upstreamTLS)
        step = .dialing
        if let upstream = dialer.upstream(for: route) {
            via = upstream.description
            if ticket == nil { ticket = services.egress.resolver.makeTicket() }
            startTimer(deadline, on: eventLoop)
        }
        dialer.dial(destination, addresses: addresses, route: route, client: client, ticket: ticket, deadline: deadline, on: eventLoop)
            .assumeIsolated()
            .whenComplete { [self] result in
                switch result {
                case .success(let dialed):
                    finish(.connected(dialed))
                case .failure(let error):
                    let failure = OutboundConnector.failure(for: error)
                    // A source address or interface that cannot be used, or an upstream down, is
                    // the configuration's problem.
                    let fields = record.logFields(["dst": "\(destination)", "error": "\(failure.reason)", "via": "\(via ?? "-")"])
                    services.logger.log(level: failure.configuration ? .warning : .debug, "connect failed", metadata: fields)
                    finish(.failed(.requestFailed(failure.code)))
                }
            }
    }

    /// Refuses a destination the policy denies: reply 0x02, a notice naming the rule.
    func deny(_ reason: Policy.Reason) {
        var notice = RefusalNotice(logger: services.logger)
        notice.refused(
            "request denied", request.destination, reason: reason.description, command: request.command, session: record.idText,
            user: subject.user, client: record.clientText)
        finish(.failed(.denied(reason)))
    }

    /// UDP ASSOCIATE: a relay socket on the control connection's local IP, every destination
    /// through the egress path (`AssociationGate`).
    private func associate(on channel: any Channel, _ hooks: AssociationHooks) {
        guard let local = channel.localAddress?.ipAddress, let client = record.client else {
            return finish(.failed(.requestFailed(.generalFailure)))
        }
        // A subject whom no rule could allow UDP gets no association whose every datagram is refused.
        if let reason = services.policy.refusesEveryDestination(.udpAssociate, subject: subject) { return deny(reason) }
        step = .binding
        ticket = services.egress.resolver.makeTicket()
        let eventLoop = channel.eventLoop
        let gate = AssociationGate(egress: services.egress, subject: subject, ticket: ticket, record: record, logger: services.logger)
        // The request's DST is where the client will send from (0 when it does not know yet).
        let expectedPort = request.destination.port == 0 ? nil : Int(request.destination.port)
        UDPAssociation.start(
            on: eventLoop, bindHost: local, ports: services.udp.ports, client: client, expectedPort: expectedPort,
            configuration: services.udp.relayConfiguration(grant: grant), allowance: hooks.allowance,
            gate: { endpoint in gate.answer(endpoint, on: eventLoop) }, onEnd: hooks.onEnd
        )
        .assumeIsolated()
        .whenComplete { [self] result in
            switch result {
            case .success(let association):
                finish(.associated(association))
            case .failure(let error):
                services.logger.error("cannot open a UDP relay socket", metadata: record.logFields(["error": "\(error)"]))
                finish(.failed(.requestFailed(.generalFailure)))
            }
        }
    }
}

extension SessionRequest.Outcome {
    /// Where the session's outbound side is: the target's address, or the relay socket's.
    var remote: SocketAddress? {
        switch self {
        case .connected(let dialed), .accepted(let dialed): return dialed.channel.remoteAddress
        case .associated(let association): return association.boundAddress
        case .listening, .failed: return nil
        }
    }

    /// The reply's BND: the outbound socket's address; the relay socket's or the listening
    /// socket's (with `advertise`'s address instead of its own, for a server behind NAT); or a
    /// BIND's peer.
    func bound(in services: SessionServices) -> SOCKSEndpoint {
        switch self {
        case .connected(let dialed): return dialed.channel.localAddress.map(SOCKSEndpoint.init) ?? .unspecified
        case .accepted(let dialed): return dialed.channel.remoteAddress.map(SOCKSEndpoint.init) ?? .unspecified
        case .associated(let association): return Self.advertised(association.boundAddress, as: services.udp.advertise)
        case .listening(let address): return Self.advertised(address, as: services.bind.advertise)
        case .failed: return .unspecified
        }
    }

    private static func advertised(_ address: SocketAddress, as advertise: String?) -> SOCKSEndpoint {
        let bound = SOCKSEndpoint(address)
        guard let advertised = advertise.flatMap(IPAddress.init) else { return bound }
        return SOCKSEndpoint(host: advertised.socksHost, port: bound.port)
    }
}
