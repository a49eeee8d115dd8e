import Logging
import NIOCore
import SOCKSProtocol
import SallyportPolicy

/// BIND (RFC 1928 section 4): the request's DST names the peer the client expects to connect
/// back. The rules judge that peer as a CONNECT's destination is judged (a rule must name `bind`);
/// the listening socket then takes a connection only from the peer's address (any port), or, for
/// DST 0.0.0.0 or ::, from any peer the rules allow. Peers from elsewhere are closed while the wait
/// goes on, the first of them logged.
extension SessionRequest {
    func bind(on channel: any Channel) {
        guard let local = channel.localAddress?.ipAddress else { return finish(.failed(.requestFailed(.generalFailure))) }
        // A subject whom no rule could allow BIND is refused before any socket or lookup.
        if let reason = services.policy.refusesEveryDestination(.bind, subject: subject) { return deny(reason) }
        let eventLoop = channel.eventLoop
        let destination = request.destination
        if destination.host.isUnspecified {
            // Any peer, each judged by the rules as it connects.
            let (egress, subject) = (services.egress, subject)
            return listen(on: local, eventLoop: eventLoop) { peer in
                guard case .allowed(_, let allowedBy, _) = egress.decideAtOnce(SOCKSEndpoint(peer), command: .bind, subject: subject) else { return nil }
                return allowedBy.description
            }
        }
        if let decision = services.egress.decideAtOnce(destination, command: .bind, subject: subject) {
            return expect(decision, on: local, eventLoop: eventLoop)
        }
        guard case .domain(let name) = destination.host else { return finish(.failed(.requestFailed(.generalFailure))) }
        step = .resolving
        ticket = services.egress.resolver.makeTicket()
        startTimer(eventLoop.now + services.timeouts.connect, on: eventLoop)
        services.egress.resolve(name, port: destination.port, command: .bind, subject: subject, client: client, ticket: ticket, on: eventLoop)
            .assumeIsolated()
            .whenSuccess { [self] decision in
                guard step == .resolving else { return }
                stopTimer()
                expect(decision, on: local, eventLoop: eventLoop)
            }
    }

    /// The expected peer judged: listen for its addresses, or refuse.
    private func expect(_ decision: EgressDecision, on local: String, eventLoop: any EventLoop) {
        guard report != nil else { return }
        switch decision {
        case .cancelled: return
        case .denied(let reason): return deny(reason)
        case .unresolved(let reason, _):
            services.logger.debug("lookup failed", metadata: record.logFields(["dst": "\(request.destination)", "error": "\(reason)"]))
            return finish(.failed(.requestFailed(.hostUnreachable)))
        case .upstream:
            // Only a CONNECT goes through an upstream; the egress path never says so for BIND.
            return finish(.failed(.requestFailed(.generalFailure)))
        case .allowed(let addresses, let allowedBy, _):
            let expected = Set(addresses.compactMap { IPAddress($0)?.unmapped })
            let label = allowedBy.description
            listen(on: local, eventLoop: eventLoop) { peer in
                guard let address = IPAddress(peer)?.unmapped, expected.contains(address) else { return nil }
                return label
            }
        }
    }

    /// Opens the listening socket; `judge` names the rule that admits a peer, nil for one refused.
    private func listen(on local: String, eventLoop: any EventLoop, judge: @escaping (SocketAddress) -> String?) {
        step = .listening
        BindListener.open(
            on: eventLoop, host: local, ports: services.bind.ports, options: RelayChannelOptions(receiveBufferBytes: services.relay.receiveBufferBytes),
            keepalive: services.relay.keepalive,
            admits: { [weak self] peer in
                guard let self, report != nil else { return false }
                if let rule = judge(peer) {
                    self.rule = rule
                    return true
                }
                refused(peer)
                return false
            },
            onPeer: { [weak self] peer in
                guard let self else { return peer.close(promise: nil) }
                stopTimer()
                listener = nil
                finish(.accepted(Dialed(channel: peer, leftover: nil)))
            }
        )
        .assumeIsolated()
        .whenComplete { [self] result in
            switch result {
            case .success(let opened):
                guard let report, step == .listening else { return opened.close() }
                listener = opened
                startTimer(eventLoop.now + services.timeouts.bind, on: eventLoop)
                report(.listening(opened.boundAddress))
            case .failure(let error):
                services.logger.error("cannot open a BIND listening socket", metadata: record.logFields(["error": "\(error)"]))
                finish(.failed(.requestFailed(.generalFailure)))
            }
        }
    }

    /// A connection from a peer the request did not name: closed; the first one is logged.
    private func refused(_ peer: SocketAddress) {
        guard !refusedPeer else { return }
        refusedPeer = true
        services.logger.notice(
            "BIND peer refused", metadata: record.logFields(["peer": "\(peer.endpointText)", "dst": "\(request.destination)"]))
    }
}

extension SOCKSHost {
    /// 0.0.0.0 or ::: a BIND that names no peer in particular.
    var isUnspecified: Bool {
        switch self {
        case .ipv4(let address): return address == .any
        case .ipv6(let address): return address.high == 0 && address.low == 0
        case .domain: return false
        }
    }
}
