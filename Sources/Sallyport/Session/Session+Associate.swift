import NIOCore
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// UDP ASSOCIATE: a relay socket on the control connection's local IP, every destination through
/// the egress path, refusals counted and logged in aggregate.
extension Session {
    func associate(_ request: SOCKSRequest) {
        guard let channel, let local = channel.localAddress?.ipAddress, let client = record.client else {
            fail(.requestFailed(.generalFailure), reply: .generalFailure)
            return
        }
        // A subject whom no rule could allow UDP gets no association whose every datagram is refused.
        if let reason = services.policy.refusesEveryDestination(.udpAssociate, subject: subject) {
            deny(request.destination, reason: reason)
            return
        }
        phase = .binding
        ticket = services.egress.resolver.makeTicket()
        let udp = services.udp
        let eventLoop = channel.eventLoop
        let configuration = UDPRelayConfiguration(
            idleTimeout: udp.idle, clientToTargetLimit: grant?.upload, targetToClientLimit: grant?.download,
            maxDestinations: udp.maxDestinations, maxPendingDestinations: udp.maxPendingDestinations,
            maxPendingBytes: udp.maxPendingBytes, refusedMemory: udp.refusedMemory)
        // The request's DST is where the client will send from (0 when it does not know yet).
        let expectedPort = request.destination.port == 0 ? nil : Int(request.destination.port)
        UDPAssociation.start(
            on: eventLoop, bindHost: local, ports: udp.ports, client: client, expectedPort: expectedPort, configuration: configuration,
            allowance: makeAllowance(),
            gate: { [weak self] endpoint in
                self?.gate(endpoint, on: eventLoop) ?? eventLoop.makeSucceededFuture(.dropped)
            },
            onEnd: { [weak self] counters, end in self?.associationEnded(counters, end) }
        )
        .assumeIsolated()
        .whenComplete { [self] result in
            switch result {
            case .success(let association):
                guard !finished, phase == .binding else {
                    association.close(.controlClosed)
                    return
                }
                self.association = association
                record.remote = association.boundAddress
                var bound = SOCKSEndpoint(association.boundAddress)
                if let advertised = udp.advertise.flatMap(IPAddress.init) {
                    bound = SOCKSEndpoint(host: advertised.socksHost, port: bound.port)
                }
                perform(machine.requestSucceeded(bound: bound))
            case .failure(let error):
                services.logger.error("cannot open a UDP relay socket", metadata: ["session": "\(record.idText)", "error": "\(error)"])
                guard phase == .binding else { return }
                fail(.requestFailed(.generalFailure), reply: .generalFailure)
            }
        }
    }

    /// Where one destination's datagrams may go.
    private func gate(_ endpoint: SOCKSEndpoint, on eventLoop: any EventLoop) -> EventLoopFuture<UDPGateAnswer> {
        services.egress.route(endpoint, command: .udpAssociate, subject: subject, client: clientNetwork, ticket: ticket, on: eventLoop)
            .assumeIsolated()
            .map { [self] decision -> UDPGateAnswer in
                switch decision {
                case .allowed(let addresses, let rule):
                    let binding = services.egress.binding(for: rule)
                    guard let address = addresses.first(where: { binding?.reaches($0) ?? true }) else {
                        noteRefused(endpoint, reason: "no address of the egress address's family")
                        return .refused
                    }
                    return .send(address, binding)
                case .denied(let reason):
                    noteRefused(endpoint, reason: reason.description)
                    return .refused
                case .upstream:
                    // Not for UDP: `Egress` resolves UDP destinations whatever the rule.
                    return .dropped
                case .unresolved(let reason, let transient):
                    noteRefused(endpoint, reason: reason)
                    return transient ? .dropped : .refused
                case .cancelled:
                    return .dropped
                }
            }
            .nonisolated()
    }

    private func noteRefused(_ endpoint: SOCKSEndpoint, reason: String) {
        refusals.refused(
            "udp destinations refused", endpoint, reason: reason, command: .udpAssociate, session: record.idText, user: identity.user, client: record.clientText)
    }

    private func associationEnded(_ counters: UDPCounters, _ end: UDPRelayEnd) {
        record.udp = counters
        record.counters = RelayCounters(clientToTarget: counters.bytesUp, targetToClient: counters.bytesDown)
        // Closing the channel may finish the session at once; the association's end comes first.
        decide(.association(end))
        channel?.close(promise: nil)
        finish(.association(end))
    }
}
