import Logging
import NIOCore
import SOCKSProtocol
import SallyportAuth
import SallyportPolicy
import SallyportRelay

/// One client connection, from accept to its access-log line. Where it is and what it holds there
/// is one `SessionState`; each channel event and each answer (login, lookup, dial, bind) is one `switch`
/// over it, and every change of state goes through `move(to:)`, which gives back what the state
/// left held (timer, lookups, login waiter, limiter grant). Bound to its channel's event loop; the
/// channel handler only hands it the channel's events.
final class Session: TimerWheelClient {
    let services: SessionServices
    /// The channel's event loop's timer wheel: the negotiation timeout.
    private var wheel: TimerWheel?
    private(set) var state: SessionState
    private var machine: ServerNegotiation
    /// Bytes read from the client and not yet consumed by the negotiation.
    private var buffer = ByteBuffer()
    private(set) var record: SessionRecord
    private(set) var identity = Identity.anonymous
    private(set) var channel: (any Channel)?
    /// The channel handler, taken out of the pipeline once the relay owns the channel.
    private var handler: (any RemovableChannelHandler)?
    private var clientInputClosed = false
    var usage = SessionUsage()
    /// The first end decided; what the access log says even if other events follow.
    private var decided: SessionEnd?

    init(services: SessionServices, negotiation: ServerNegotiation.Configuration, listener: String, proxy: ProxyExpectation? = nil) {
        self.services = services
        self.state = proxy.map { .awaitingProxyHeader($0, timer: nil) } ?? .negotiating(timer: nil)
        self.machine = ServerNegotiation(configuration: negotiation)
        self.record = SessionRecord(id: services.registry.makeID(), listener: listener)
    }

    var subject: PolicySubject { PolicySubject(user: identity.user, groups: identity.groups) }

    /// The one way from one state to the next.
    private func move(to next: SessionState) {
        let left = state.holdings
        state = next
        left.release(keeping: next.holdings, to: services.limiter, wheel: wheel)
    }

    // MARK: Channel events, as the handler passes them on

    func attach(to channel: any Channel, handler: any RemovableChannelHandler) {
        self.channel = channel
        self.handler = handler
        record.client = channel.remoteAddress
        services.registry.add(record.id, NIOLoopBound(self, eventLoop: channel.eventLoop))
        let wheel = services.timers.wheel(on: channel.eventLoop)
        self.wheel = wheel
        let timer = wheel.schedule(at: channel.eventLoop.now + services.timeouts.negotiation, for: self)
        switch state {
        case .awaitingProxyHeader(let proxy, _): state = .awaitingProxyHeader(proxy, timer: timer)
        case .negotiating: state = .negotiating(timer: timer)
        default: wheel.cancel(timer)
        }
    }

    /// At accept: false when the client was turned away. Behind a load balancer the peer must be a
    /// trusted one, and the client rules wait for the header's client.
    func admit() -> Bool {
        if case .awaitingProxyHeader(let proxy, _) = state {
            if let peer = record.client.flatMap(IPAddress.init), proxy.trusts(peer) { return true }
            turnAway(.proxyHeaderRefused, notice: "connection from outside trusted_proxies closed")
            return false
        }
        // A peer without an IP (the socket was gone before it could be read) matches no client
        // rule: with rules, it is refused like any address they do not name.
        let (admitted, reason) = services.policy.admitsClient(record.client.flatMap(IPAddress.init))
        if !admitted { turnAway(.clientDenied(reason), notice: "client denied", ["rule": "\(reason)"]) }
        return admitted
    }

    func received(_ bytes: inout ByteBuffer) {
        // Once a UDP association is up, its control connection carries nothing (RFC 1928 section 7).
        guard state.isNegotiating else { return }
        // Copied, not kept: holding on to the read buffer would stop the channel's receive-buffer
        // pool from reusing it, and every session would keep a second buffer for its whole life.
        buffer.writeBuffer(&bytes)
        runMachine()
    }

    /// The client a PROXY header named (`ProxyHeaderReader`); false when the client rules refuse it.
    func proxied(for client: SocketAddress) -> Bool {
        guard case .awaitingProxyHeader(_, let timer) = state else { return false }
        record.client = client
        state = .negotiating(timer: timer)
        return admit()
    }

    /// The verified client certificate's user (a login with method username would replace it).
    func certified(as identity: Identity) { become(identity) }

    /// Closes the session for `end` before any SOCKS reply (a PROXY header or TLS refused), with a
    /// notice naming the client.
    func turnAway(_ end: SessionEnd, notice: String?, _ fields: Logger.Metadata = [:]) {
        if let notice { services.logger.notice("\(notice)", metadata: record.logFields(fields)) }
        close(end)
    }

    func inputClosed() {
        clientInputClosed = true
        // A client that ends its side of the control connection ends its association.
        if case .associated(let association, _) = state { return association.close(.controlClosed) }
        perform(machine.inputClosed())
    }

    func channelClosed() {
        channel = nil
        switch state {
        // The association lives exactly as long as its control connection.
        case .associated(let association, _): association.close(.controlClosed)
        // The relay reports its own end.
        case .relaying, .finished: break
        default: finish(.negotiation(.clientClosed))
        }
    }

    func clientError(_ error: any Error) {
        services.logger.debug("client connection error", metadata: ["session": "\(record.idText)", "error": "\(error)"])
        close(.clientError)
    }

    // MARK: From the server: admin, shutdown, usage

    /// Closed from the admin listener (`end=closed_by_admin`), or at shutdown: now, whatever the state.
    func closeByAdmin() { close(.closedByAdmin) }
    func closeForShutdown() { close(.closedByServer) }

    /// What the admin listener shows of this session now. Call on the session's event loop.
    var snapshot: SessionSnapshot { record.snapshot(bytes: bytesSoFar) }

    /// The bytes relayed so far, each way. Call on the session's event loop.
    var bytesSoFar: RelayCounters {
        switch state {
        case .associated(let association, _):
            let counters = association.countersSoFar
            return RelayCounters(clientToTarget: counters.bytesUp, targetToClient: counters.bytesDown)
        case .relaying(let relay, _): return relay.bytesSoFar
        default: return record.counters
        }
    }

    // MARK: The negotiation

    private func runMachine() {
        while channel != nil, state.isNegotiating {
            let action = machine.process(&buffer)
            if case .needMoreData = action { break }
            if case .wait = action { break }
            perform(action)
        }
        channel?.flush()
    }

    private func perform(_ action: ServerNegotiation.Action, flush: Bool = false) {
        guard let channel, !state.isOver else { return }
        defer { if flush { channel.flush() } }
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
            move(to: .closing)
            channel.writeAndFlush(bytes).whenComplete { _ in channel.close(promise: nil) }
        case .close(let failure):
            close(.negotiation(failure))
        case .authenticate(let credentials):
            // The credentials have been read out of the negotiation buffer: wipe them there.
            buffer.setRepeatingByte(0, count: buffer.readerIndex, at: 0)
            authenticate(credentials)
        case .execute(let request):
            execute(request)
        case .established:
            // Only `requestSucceeded` answers this, and the request's own step handles it.
            break
        }
    }

    private func authenticate(_ credentials: UsernamePasswordRequest) {
        record.user = credentials.username
        guard let authenticator = services.authenticator, let channel, case .negotiating(let timer) = state else {
            perform(machine.authenticationCompleted(success: false))
            return
        }
        let waiter = LoginWaiter()
        move(to: .authenticating(waiter, timer: timer))
        let request = AuthenticationRequest(
            username: credentials.username, password: credentials.password, client: record.client, stillWanted: { waiter.isWaiting })
        authenticator.authenticate(request, on: channel.eventLoop).hop(to: channel.eventLoop).assumeIsolated().whenComplete { [self] result in
            guard case .authenticating(let current, let timer) = state, current === waiter else { return }
            move(to: .negotiating(timer: timer))
            LoginOutcome.report(result, user: credentials.username, session: record, logger: services.logger, metrics: services.metrics)
            let login = LoginOutcome(result)
            if case .succeeded(let identity) = login {
                become(identity)
                perform(machine.authenticationCompleted(success: true))
                runMachine()
                return
            }
            if case .refused = login { decide(.authRefused) }
            perform(machine.authenticationCompleted(success: false))
        }
    }

    /// The session is `identity`'s from now on; its per-user metric series is claimed now.
    private func become(_ identity: Identity) {
        self.identity = identity
        record.user = identity.user
        if services.perUserMetrics, let user = identity.user { _ = services.metrics?.userLabel(user) }
    }

    // MARK: The request: decide, dial or bind, reply

    private func execute(_ request: SOCKSRequest) {
        guard let channel else { return }
        record.command = request.command
        record.destination = request.destination
        let running = SessionRequest(request, services: services, subject: subject, record: record)
        move(to: .requesting(running))
        // A user over a quota gets nothing more this period.
        if let quota = overQuota() { return fail(.quota(quota)) }
        let hooks = request.command != .udpAssociate ? nil : SessionRequest.AssociationHooks(
            allowance: makeAllowance(), onEnd: { [weak self] counters, end in self?.associationEnded(counters, end) })
        running.start(on: channel, association: hooks) { [weak self] outcome in
            guard let self else { return outcome.discard() }
            requestDone(outcome, running)
        }
    }

    /// Decided, dialled, bound or accepted: the reply, then the relay or the association; or the
    /// refusal. A BIND's first reply (it listens) leaves the request running.
    private func requestDone(_ outcome: SessionRequest.Outcome, _ running: SessionRequest) {
        guard case .requesting(let current) = state, current === running, let channel else { return outcome.discard() }
        record.rule = running.rule
        if let via = running.via { record.notesForWriting().upstream = via }
        if case .failed(let end) = outcome { return fail(end) }
        if case .listening = outcome { return perform(machine.listening(bound: outcome.bound(in: services)), flush: true) }
        record.remote = outcome.remote
        guard case .established(let reply) = machine.requestSucceeded(bound: outcome.bound(in: services)) else {
            return outcome.discard()
        }
        record.reply = .succeeded
        channel.write(reply, promise: nil)
        switch outcome {
        case .connected(let dialed), .accepted(let dialed): startRelay(to: dialed, grant: running.grant)
        case .associated(let association):
            channel.flush()
            buffer = ByteBuffer()
            move(to: .associated(association, running))
        case .listening, .failed: break
        }
    }

    /// The success reply is written: relay, the bytes the client sent ahead going first.
    private func startRelay(to dialed: Dialed, grant: SessionLimiter.Grant?) {
        guard let channel else { return dialed.channel.close(promise: nil) }
        // What the target said along with the upstream's answer, before anything relayed.
        if let leftover = dialed.leftover { channel.write(leftover, promise: nil) }
        channel.flush()
        let leftover = UInt64(dialed.leftover?.readableBytes ?? 0)
        let payload = buffer.readableBytes > 0 ? buffer : nil
        buffer = ByteBuffer()
        let configuration = RelayConfiguration(idleTimeout: services.timeouts.idle, clientToTargetLimit: grant?.upload, targetToClientLimit: grant?.download)
        do {
            let relay = try TCPRelay.start(
                client: channel, target: dialed.channel, configuration: configuration, initialPayload: payload, clientInputClosed: clientInputClosed,
                allowance: makeAllowance(), timers: wheel
            ) { [self] outcome in
                record.counters = outcome.counters
                record.counters.targetToClient += leftover
                finish(.relay(outcome.end))
            }
            // A relay that ended at once has finished the session already.
            guard case .requesting = state else { return }
            move(to: .relaying(relay, grant: grant))
            if let handler { channel.pipeline.syncOperations.removeHandler(handler, promise: nil) }
            handler = nil
        } catch {
            services.logger.error("cannot start the relay", metadata: record.logFields(["error": "\(error)"]))
            dialed.channel.close(promise: nil)
            close(.clientError)
        }
    }

    private func associationEnded(_ counters: UDPCounters, _ end: UDPRelayEnd) {
        record.udp = counters
        record.counters = RelayCounters(clientToTarget: counters.bytesUp, targetToClient: counters.bytesDown)
        // Closing the channel may finish the session at once; the association's end comes first.
        decide(.association(end))
        channel?.close(promise: nil)
        finish(.association(end))
    }

    /// `timeouts.negotiation` ran out (the request's own timer is the request's).
    func deadlineReached(_ token: Int) {
        switch state {
        case .awaitingProxyHeader, .negotiating, .authenticating: close(.negotiationTimeout)
        default: break
        }
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

    /// Answers the request with the end's reply code, then closes.
    private func fail(_ end: SessionEnd) {
        guard case .requesting = state, let code = end.reply else { return }
        decide(end)
        perform(machine.requestFailed(code))
    }

    /// Ends the session for `end`, whatever its state: a running relay or association is closed
    /// (and reports its end), anything before closes the client connection (which then finishes it).
    func close(_ end: SessionEnd) {
        decide(end)
        switch state {
        case .relaying(let relay, _): relay.close()
        case .associated(let association, _): association.close(.closedByServer)
        case .finished: break
        default:
            move(to: .closing)
            channel?.close(promise: nil)
        }
    }

    /// Gives back everything the session held and writes its access-log line; once.
    private func finish(_ end: SessionEnd) {
        if case .finished = state { return }
        move(to: .finished)
        services.registry.remove(record.id)
        let final = decided ?? end
        usage.account(record.counters, of: identity, in: services.usage)
        // Metrics first: whoever reads the access-log line finds the session in the metrics too.
        services.metrics?.sessionEnded(record, end: final, user: services.perUserMetrics ? identity.user : nil)
        services.accessLogger.info("session", metadata: record.metadata(end: final))
        // Let go of what the session held as soon as it is over; the handler holds this session:
        // a cycle until now.
        buffer = ByteBuffer()
        handler = nil
        channel = nil
    }

    /// For tests: where the session is, by name, and its negotiation buffer as it is now.
    var stateName: String { state.name }
    func withNegotiationBuffer<T>(_ body: (ByteBuffer) -> T) -> T { body(buffer) }
}
