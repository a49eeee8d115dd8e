import Logging
import NIOCore
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// The request: limits, then CONNECT or UDP ASSOCIATE through the egress path, then the relay.
extension Session {
    var subject: PolicySubject { PolicySubject(user: identity.user, groups: identity.groups) }
    var clientNetwork: ClientNetwork { ClientNetwork(record.client) }

    func execute(_ request: SOCKSRequest) {
        guard let channel else { return }
        timer?.cancel()
        record.command = request.command
        record.destination = request.destination

        // A user over a quota gets nothing more this period.
        if let quota = overQuota() {
            fail(.quota(quota), reply: .notAllowed)
            return
        }
        // Limits first: a refused session costs no lookup.
        switch services.limiter.acquire(user: identity.user, client: clientNetwork, limits: services.limits) {
        case .failure(let refusal):
            services.logger.notice(
                "session limit reached",
                metadata: ["session": "\(record.idText)", "user": "\(identity.user ?? "-")", "client": "\(record.clientText)", "limit": "\(refusal.description)"])
            // Per-user and per-client limits are policy (0x02); the server-wide cap is the server's
            // own state (0x01), worth retrying later.
            if case .server = refusal {
                fail(.limit(refusal), reply: .generalFailure)
            } else {
                fail(.limit(refusal), reply: .notAllowed)
            }
            return
        case .success(let grant):
            self.grant = grant
        }
        if request.command == .udpAssociate {
            associate(request)
        } else {
            // The lookup and the connect together get `timeouts.connect`.
            connect(request, deadline: channel.eventLoop.now + services.timeouts.connect)
        }
    }

    // MARK: CONNECT

    private func connect(_ request: SOCKSRequest, deadline: NIODeadline) {
        guard let eventLoop = channel?.eventLoop else { return }
        let destination = request.destination
        if let decision = services.egress.decideAtOnce(destination, command: .connect, subject: subject) {
            proceed(decision, request: request, deadline: deadline)
            return
        }
        guard case .domain(let name) = destination.host else { return }
        phase = .resolving
        // An address needs no timer of its own: the connect's timeout is the deadline.
        timer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in requestTimedOut() }
        let ticket = services.egress.resolver.makeTicket()
        self.ticket = ticket
        services.egress.resolve(
            name, port: destination.port, command: .connect, subject: subject, client: clientNetwork, ticket: ticket, on: eventLoop
        )
        .assumeIsolated()
        .whenSuccess { [self] decision in
            guard phase == .resolving else { return }
            proceed(decision, request: request, deadline: deadline)
        }
    }

    private func proceed(_ decision: EgressDecision, request: SOCKSRequest, deadline: NIODeadline) {
        guard !finished, let eventLoop = channel?.eventLoop else { return }
        switch decision {
        case .cancelled:
            return
        case .denied(let reason):
            deny(request.destination, reason: reason)
        case .unresolved(let reason, _):
            services.logger.debug("lookup failed", metadata: ["session": "\(record.idText)", "dst": "\(request.destination)", "error": "\(reason)"])
            fail(.requestFailed(.hostUnreachable), reply: .hostUnreachable)
        case .upstream(let rule):
            // The name goes to the upstream unresolved.
            record.rule = rule.description
            guard let upstream = services.egress.upstream(for: rule) else { return }
            connect(via: upstream, to: request.destination, binding: services.egress.binding(for: rule), request: request, deadline: deadline)
        case .allowed(let addresses, let rule):
            record.rule = rule.description
            if let upstream = services.egress.upstream(for: rule) {
                // The address the policy allowed, with the port asked for.
                let destination = SOCKSEndpoint(addresses[0])
                connect(via: upstream, to: destination, binding: services.egress.binding(for: rule), request: request, deadline: deadline)
                return
            }
            phase = .connecting
            let name: String
            if case .domain(let domain) = request.destination.host { name = domain } else { name = "" }
            services.connector.connect(
                to: addresses, name: name, port: Int(request.destination.port), binding: services.egress.binding(for: rule),
                timeout: deadline - eventLoop.now, on: eventLoop
            )
            .assumeIsolated()
            .whenComplete { [self] result in connected(result, request: request) }
        }
    }

    func connected(_ result: Result<any Channel, any Error>, request: SOCKSRequest) {
        switch result {
        case .success(let target):
            guard !finished, phase == .connecting else {
                target.close(promise: nil)
                return
            }
            outbound = target
            record.remote = target.remoteAddress
            perform(machine.requestSucceeded(bound: target.localAddress.map(SOCKSEndpoint.init) ?? .unspecified))
        case .failure(let error):
            guard !finished, phase == .connecting else { return }
            let failure = OutboundConnector.failure(for: error)
            // A source address or interface that cannot be used, or an upstream down, is the
            // configuration's problem.
            var metadata: Logger.Metadata = ["session": "\(record.idText)", "dst": "\(request.destination)", "error": "\(failure.reason)"]
            if let upstream = record.notes?.upstream { metadata["via"] = .string(upstream) }
            services.logger.log(level: failure.configuration ? .warning : .debug, "connect failed", metadata: metadata)
            fail(.requestFailed(failure.code), reply: failure.code)
        }
    }

    /// `timeouts.connect` ran out while the name was looked up (0x04) or connected to (0x06).
    func requestTimedOut() {
        timer = nil
        switch phase {
        case .resolving:
            ticket?.cancel()
            fail(.requestFailed(.hostUnreachable), reply: .hostUnreachable)
        case .connecting:
            fail(.requestFailed(.ttlExpired), reply: .ttlExpired)
        case .negotiating, .binding, .relaying, .associated, .closing:
            break
        }
    }

    /// Refuses a request the policy denies: reply 0x02, a notice naming the rule.
    func deny(_ destination: SOCKSEndpoint, reason: Policy.Reason) {
        refusals.refused(
            "request denied", destination, reason: reason.description, command: record.command ?? .connect, session: record.idText, user: identity.user,
            client: record.clientText)
        fail(.denied(reason), reply: .notAllowed)
    }

    /// The success reply: start relaying, the bytes the client sent ahead going first.
    func established(reply: ByteBuffer) {
        guard let channel else { return }
        timer?.cancel()
        timer = nil
        record.reply = .succeeded
        channel.writeAndFlush(reply, promise: nil)
        if association != nil {
            phase = .associated
            buffer = ByteBuffer()
            return
        }
        guard let target = outbound else { return }
        // What the target said along with the upstream's answer, before anything relayed.
        let leftover = UInt64(record.notes?.targetLeftover?.readableBytes ?? 0)
        if let bytes = record.notes?.targetLeftover {
            channel.writeAndFlush(bytes, promise: nil)
            record.notes?.targetLeftover = nil
        }
        let payload = buffer.readableBytes > 0 ? buffer : nil
        buffer = ByteBuffer()
        do {
            let configuration = RelayConfiguration(
                idleTimeout: services.timeouts.idle, clientToTargetLimit: grant?.upload, targetToClientLimit: grant?.download)
            relay = try TCPRelay.start(
                client: channel, target: target, configuration: configuration, initialPayload: payload, clientInputClosed: clientInputClosed,
                allowance: makeAllowance()
            ) { [self] outcome in
                record.counters = outcome.counters
                record.counters.targetToClient += leftover
                finish(.relay(outcome.end))
            }
            phase = .relaying
            detachFromPipeline()
        } catch {
            services.logger.error("cannot start the relay", metadata: ["session": "\(record.idText)", "error": "\(error)"])
            target.close(promise: nil)
            close(.clientError)
        }
    }
}
