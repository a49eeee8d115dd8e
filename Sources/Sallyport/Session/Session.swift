import Logging
import NIOCore
import SOCKSProtocol
import SallyportAuth
import SallyportPolicy
import SallyportRelay

/// What every session started under one configuration shares: settings and services. Immutable; a
/// reload makes a new one for the sessions that start after it.
struct SessionServices: Sendable {
    let timeouts: Timeouts
    let limits: Limits
    var egress: Egress
    var authenticator: (any Authenticator)?
    let connector: any OutboundConnecting
    let logger: Logger
    let accessLogger: Logger
    let registry: SessionRegistry
    let limiter: SessionLimiter
    let udp: UDPSettings
    /// Where sessions, logins and refusals are counted (nil: not counted, as in unit tests).
    var metrics: ServerMetrics? = nil
    /// Count sessions and bytes per user name too.
    var perUserMetrics = false
    /// Where each user's bytes are counted (nil: not counted), and the quotas judged against them.
    var usage: UsageLedger? = nil
    var quotas: [Quota] = []

    var policy: CompiledPolicy { egress.compiled }
}

/// One client connection, from accept to its access-log line: what it costs the server (the
/// limiter grant, the registry entry, its timer, its lookups) and the one `finish(_:)` that gives
/// all of it back. Bound to the event loop of its channel; the channel handler only hands it the
/// channel's events.
final class Session {
    /// Where the session is, for the events that may still arrive.
    enum Phase: Equatable {
        case negotiating
        case resolving
        case connecting
        case binding
        case relaying
        case associated
        /// A failure reply is on its way; the channel is closing.
        case closing
    }

    let services: SessionServices
    var machine: ServerNegotiation
    /// Bytes read from the client and not yet consumed by the negotiation.
    var buffer = ByteBuffer()
    var record: SessionRecord
    var channel: (any Channel)?
    /// Takes the channel handler out of the pipeline once the relay owns the channel.
    private var detach: (() -> Void)?
    var identity = Identity.anonymous
    var clientInputClosed = false
    var phase = Phase.negotiating
    /// The negotiation timer, then the request timer (`timeouts.connect` for lookup and connect).
    var timer: Scheduled<Void>?
    var grant: SessionLimiter.Grant?
    /// The session's name lookups, dropped when it ends.
    var ticket: LookupTicket?
    /// Told when the session ends, so that a login check still queued for it is dropped.
    var loginWaiter: LoginWaiter?
    var outbound: (any Channel)?
    var relay: RelaySession?
    var association: UDPAssociation?
    var refusals: RefusalNotice
    /// The bytes already given to the usage ledger.
    var accounted = RelayCounters()
    /// The first end decided; what the access log says even if other events follow.
    private var decided: SessionEnd?
    private(set) var finished = false

    /// Set while the PROXY protocol header this listener expects has not been read.
    var awaitingProxyHeader: ProxyExpectation?

    init(services: SessionServices, negotiation: ServerNegotiation.Configuration, listener: String, proxy: ProxyExpectation? = nil) {
        self.services = services
        self.awaitingProxyHeader = proxy
        self.machine = ServerNegotiation(configuration: negotiation)
        self.record = SessionRecord(id: services.registry.makeID(), listener: listener)
        self.refusals = RefusalNotice(logger: services.logger)
    }

    // MARK: Channel events, as the handler passes them on

    func attach(to channel: any Channel, detach: @escaping () -> Void) {
        self.channel = channel
        self.detach = detach
        record.client = channel.remoteAddress
        services.registry.add(record.id, NIOLoopBound(self, eventLoop: channel.eventLoop))
        timer = channel.eventLoop.assumeIsolated().scheduleTask(in: services.timeouts.negotiation) { [self] in
            negotiationTimedOut()
        }
    }

    /// Client rules, before any negotiation: false when the client was turned away. Behind a load
    /// balancer the peer must be a trusted one, and the rules wait for the header's client.
    func admit() -> Bool {
        if let proxy = awaitingProxyHeader { return admitBalancer(proxy) }
        // A peer without an IP (the socket was gone before it could be read) matches no client
        // rule: with rules, it is refused like any address they do not name.
        let (admitted, reason) = services.policy.admitsClient(record.client.flatMap(IPAddress.init))
        if !admitted {
            services.logger.notice("client denied", metadata: ["client": "\(record.clientText)", "rule": "\(reason)"])
            close(.clientDenied(reason))
        }
        return admitted
    }

    func received(_ bytes: inout ByteBuffer) {
        // Once a UDP association is up, its control connection carries nothing (RFC 1928 section 7).
        guard association == nil, !finished else { return }
        // Copied, not kept: holding on to the read buffer would stop the channel's receive-buffer
        // pool from reusing it, and every session would keep a second buffer for its whole life.
        buffer.writeBuffer(&bytes)
        if let proxy = awaitingProxyHeader, !readProxyHeader(proxy) { return }
        runMachine()
    }

    func inputClosed() {
        clientInputClosed = true
        // A client that ends its side of the control connection ends its association.
        if let association {
            association.close(.controlClosed)
            return
        }
        perform(machine.inputClosed())
    }

    func channelClosed() {
        // The association lives exactly as long as its control connection.
        association?.close(.controlClosed)
        outbound?.close(promise: nil)
        if relay == nil { finish(.negotiation(.clientClosed)) }
        channel = nil
    }

    func clientError(_ error: any Error) {
        services.logger.debug("client connection error", metadata: ["session": "\(record.idText)", "error": "\(error)"])
        close(.clientError)
    }

    /// Server shutdown: close now, whatever the phase.
    /// Closed from the admin listener: the access log says `end=closed_by_admin`.
    func closeByAdmin() {
        decide(.closedByAdmin)
        closeForShutdown()
    }

    /// What the admin listener shows of this session now. Call on the session's event loop.
    var snapshot: SessionSnapshot {
        let bytes = bytesSoFar
        return SessionSnapshot(
            id: record.idText, listener: record.listener, client: record.clientText, user: record.user,
            command: record.command?.description, destination: record.destination?.description,
            bytesUp: bytes.clientToTarget, bytesDown: bytes.targetToClient,
            ageSeconds: Double((NIODeadline.now() - record.start).nanoseconds) / 1e9)
    }

    /// The bytes relayed so far, each way. Call on the session's event loop.
    var bytesSoFar: RelayCounters {
        if let association {
            let counters = association.countersSoFar
            return RelayCounters(clientToTarget: counters.bytesUp, targetToClient: counters.bytesDown)
        }
        return relay?.bytesSoFar ?? record.counters
    }

    func closeForShutdown() {
        if let association {
            association.close(.closedByServer)
        } else if let relay {
            relay.close()
        } else {
            close(.closedByServer)
        }
    }

    // MARK: Driving the negotiation

    func runMachine() {
        while channel != nil, !finished, relay == nil, association == nil {
            let action = machine.process(&buffer)
            if case .needMoreData = action { break }
            if case .wait = action { break }
            perform(action)
        }
        channel?.flush()
    }

    func perform(_ action: ServerNegotiation.Action) {
        guard let channel, !finished else { return }
        if machine.isSOCKS4, record.notes?.socks4UserID == nil {
            record.notesForWriting().socks4UserID = SessionRecord.printable(machine.socks4UserID ?? [])
        }
        switch action {
        case .needMoreData, .wait:
            break
        case .send(let bytes):
            channel.write(bytes, promise: nil)
        case .sendAndClose(let bytes, let failure, let reply):
            decide(.negotiation(failure))
            if let reply { record.reply = reply }
            if case .commandNotSupported(let command) = failure { record.command = command }
            phase = .closing
            channel.writeAndFlush(bytes).whenComplete { _ in channel.close(promise: nil) }
        case .close(let failure):
            close(.negotiation(failure))
        case .authenticate(let credentials):
            // The credentials have been read out of the negotiation buffer: wipe them there.
            buffer.setRepeatingByte(0, count: buffer.readerIndex, at: 0)
            authenticate(credentials)
        case .execute(let request):
            execute(request)
        case .established(let reply):
            established(reply: reply)
        }
    }

    private func authenticate(_ credentials: UsernamePasswordRequest) {
        record.user = credentials.username
        guard let authenticator = services.authenticator, let channel else {
            perform(machine.authenticationCompleted(success: false))
            return
        }
        let waiter = LoginWaiter()
        loginWaiter = waiter
        let request = AuthenticationRequest(
            username: credentials.username, password: credentials.password, client: record.client,
            stillWanted: { waiter.isWaiting })
        let user = credentials.username
        authenticator.authenticate(request, on: channel.eventLoop).hop(to: channel.eventLoop).assumeIsolated()
            .whenComplete { [self] result in
                guard !finished else { return }
                var metadata: Logger.Metadata = ["session": "\(record.idText)", "user": "\(user)", "client": "\(record.clientText)"]
                switch result {
                case .success(.success(let identity)):
                    self.identity = identity
                    record.user = identity.user
                    services.metrics?.authAttempt("success")
                    services.logger.info("authentication succeeded", metadata: metadata)
                    perform(machine.authenticationCompleted(success: true))
                    runMachine()
                case .success(.failure(let reason)):
                    metadata["reason"] = "\(reason)"
                    services.metrics?.authAttempt("failure")
                    services.logger.notice("authentication failed", metadata: metadata)
                    perform(machine.authenticationCompleted(success: false))
                case .success(.refused(let reason)):
                    services.metrics?.authAttempt(reason.hasPrefix("throttled") ? "throttled" : "overloaded")
                    metadata["reason"] = "\(reason)"
                    services.logger.notice("authentication refused", metadata: metadata)
                    decide(.authRefused)
                    perform(machine.authenticationCompleted(success: false))
                case .failure(let error):
                    metadata["error"] = "\(error)"
                    services.logger.error("authenticator error", metadata: metadata)
                    perform(machine.authenticationCompleted(success: false))
                }
            }
    }

    /// The relay owns the channel from now on: the handler leaves the pipeline.
    func detachFromPipeline() {
        detach?()
        detach = nil
    }

    // MARK: Ending

    /// Records why the session ends, unless an earlier cause was recorded.
    func decide(_ end: SessionEnd) {
        guard decided == nil else { return }
        decided = end
        switch end {
        case .denied(let rule), .clientDenied(let rule): services.metrics?.policyDenial(rule: rule.description)
        default: break
        }
    }

    /// Ends the session for `end`: closes the client connection (which then finishes it).
    func close(_ end: SessionEnd) {
        decide(end)
        phase = .closing
        channel?.close(promise: nil)
    }

    /// Answers the request with a failure reply and closes.
    func fail(_ end: SessionEnd, reply code: SOCKSReplyCode) {
        guard !finished, phase != .closing else { return }
        decide(end)
        perform(machine.requestFailed(code))
    }

    private func negotiationTimedOut() {
        timer = nil
        guard phase == .negotiating, !machine.isFinished else { return }
        close(.negotiationTimeout)
    }

    /// Gives back everything the session held and writes its access-log line; once.
    func finish(_ end: SessionEnd) {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        timer = nil
        ticket?.cancel()
        ticket = nil
        loginWaiter?.leave()
        loginWaiter = nil
        services.registry.remove(record.id)
        if let grant {
            services.limiter.release(grant)
            self.grant = nil
        }
        let final = decided ?? end
        account(record.counters)
        // Metrics first: whoever reads the access-log line finds the session in the metrics too.
        if let metrics = services.metrics {
            metrics.sessionEnded(
                command: record.command?.description ?? "-", end: final.logName, up: record.counters.clientToTarget,
                down: record.counters.targetToClient, user: services.perUserMetrics ? identity.user : nil)
            if let udp = record.udp { metrics.udpDatagrams(udp) }
        }
        services.accessLogger.info("session", metadata: record.metadata(end: final))
        // Let go of what the session held as soon as it is over; the detach closure holds the
        // handler's context, which holds the handler, which holds this session: a cycle until now.
        buffer = ByteBuffer()
        outbound = nil
        relay = nil
        association = nil
        detach = nil
        channel = nil
    }
}
