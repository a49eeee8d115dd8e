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
    let policy: Policy
    let authenticator: (any Authenticator)?
    let connector: OutboundConnector
    let logger: Logger
    let accessLogger: Logger
    let registry: SessionRegistry
    let limiter: SessionLimiter
    let udp: UDPSettings
    let names: NameCache
}

/// Drives one client connection through the negotiation, then hands it to the relay.
///
/// A thin shell around `ServerNegotiation`: it buffers inbound bytes, carries out the machine's
/// actions (write, close, authenticate, connect), runs the negotiation timer, and writes the session's
/// access-log line when it ends.
final class SOCKSServerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let services: SessionServices
    private var machine: ServerNegotiation
    private var buffer = ByteBuffer()
    private var context: ChannelHandlerContext?
    private var record: SessionRecord
    private var negotiationTimer: Scheduled<Void>?
    private var identity = Identity.anonymous
    private var clientInputClosed = false
    private var outbound: (any Channel)?
    private var relay: RelaySession?
    private var association: UDPAssociation?
    private var grant: SessionLimiter.Grant?
    /// The name lookup under way, called off if the session ends first.
    private var lookup: LookupCancellation?
    private var finished = false

    init(services: SessionServices, negotiation: ServerNegotiation.Configuration, listener: String) {
        self.services = services
        self.machine = ServerNegotiation(configuration: negotiation)
        self.record = SessionRecord(id: services.registry.makeID(), listener: listener)
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        record.client = context.channel.remoteAddress
        services.registry.add(record.id, NIOLoopBound(self, eventLoop: context.eventLoop))
        negotiationTimer = context.eventLoop.assumeIsolated().scheduleTask(in: services.timeouts.negotiation) { [self] in
            negotiationTimedOut()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        // Client rules come before any negotiation.
        if let address = context.channel.remoteAddress.flatMap(IPAddress.init) {
            let (admitted, reason) = services.policy.admitsClient(address)
            if !admitted {
                record.rule = reason.description
                record.end = "client_denied"
                services.logger.notice("client denied", metadata: ["client": "\(record.clientText)", "rule": "\(reason)"])
                context.close(promise: nil)
                return
            }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Once a UDP association is up, its control connection carries nothing (RFC 1928 section 7).
        guard association == nil else { return }
        // Copied, not kept: holding on to the read buffer would stop the channel's receive-buffer
        // pool from reusing it, and every session would keep a second buffer for its whole life.
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        runMachine()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            clientInputClosed = true
            // A client that ends its side of the control connection ends its association.
            if let association {
                association.close(.controlClosed)
                return
            }
            perform(machine.inputClosed())
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The association lives exactly as long as its control connection.
        association?.close(.controlClosed)
        outbound?.close(promise: nil)
        if relay == nil { finish(end: record.end ?? "client_closed") }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        record.end = record.end ?? "client_error"
        services.logger.debug("client connection error", metadata: ["session": "\(record.idText)", "error": "\(error)"])
        context.close(promise: nil)
    }

    /// Server shutdown: close now, whatever the phase.
    func closeForShutdown() {
        if let association {
            association.close(.closedByServer)
            context?.close(promise: nil)
        } else if let relay {
            relay.close()
        } else {
            record.end = record.end ?? "closed_by_server"
            context?.close(promise: nil)
        }
    }

    // MARK: Driving the machine

    private func runMachine() {
        while context != nil, !finished, relay == nil, association == nil {
            let action = machine.process(&buffer)
            if case .needMoreData = action { break }
            if case .wait = action { break }
            perform(action)
        }
        context?.flush()
    }

    private func perform(_ action: ServerNegotiation.Action) {
        guard let context else { return }
        switch action {
        case .needMoreData, .wait:
            break
        case .send(let bytes):
            context.write(wrapOutboundOut(bytes), promise: nil)
        case .sendAndClose(let bytes, let failure):
            record.end = record.end ?? failure.logName
            if case .requestFailed(let code) = failure { record.reply = code }
            if case .commandNotSupported(let command) = failure {
                record.reply = .commandNotSupported
                record.command = command
            }
            if case .protocolError(.unsupportedAddressType) = failure { record.reply = .addressTypeNotSupported }
            if case .protocolError(.invalidDomainName) = failure { record.reply = .generalFailure }
            context.writeAndFlush(wrapOutboundOut(bytes)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        case .close(let failure):
            record.end = record.end ?? failure.logName
            context.close(promise: nil)
        case .authenticate(let credentials):
            authenticate(credentials, context: context)
        case .execute(let request):
            execute(request, context: context)
        case .established(let reply):
            startRelay(reply: reply, context: context)
        }
    }

    private func authenticate(_ credentials: UsernamePasswordRequest, context: ChannelHandlerContext) {
        record.user = credentials.username
        guard let authenticator = services.authenticator else {
            perform(machine.authenticationCompleted(success: false))
            return
        }
        let request = AuthenticationRequest(
            username: credentials.username, password: credentials.password.bytes, client: context.channel.remoteAddress)
        authenticator.authenticate(request, on: context.eventLoop).hop(to: context.eventLoop).assumeIsolated()
            .whenComplete { [self] result in
                guard self.context != nil, !finished else { return }
                switch result {
                case .success(.success(let identity)):
                    self.identity = identity
                    services.logger.info(
                        "authentication succeeded",
                        metadata: ["session": "\(record.idText)", "user": "\(credentials.username)", "client": "\(record.clientText)"])
                    perform(machine.authenticationCompleted(success: true))
                    runMachine()
                case .success(.failure(let reason)):
                    services.logger.notice(
                        "authentication failed",
                        metadata: ["session": "\(record.idText)", "user": "\(credentials.username)", "client": "\(record.clientText)", "reason": "\(reason)"])
                    perform(machine.authenticationCompleted(success: false))
                case .success(.refused(let reason)):
                    services.logger.notice(
                        "authentication refused",
                        metadata: ["session": "\(record.idText)", "user": "\(credentials.username)", "client": "\(record.clientText)", "reason": "\(reason)"])
                    record.end = "auth_refused"
                    perform(machine.authenticationCompleted(success: false))
                case .failure(let error):
                    services.logger.error(
                        "authenticator error",
                        metadata: ["session": "\(record.idText)", "user": "\(credentials.username)", "error": "\(error)"])
                    perform(machine.authenticationCompleted(success: false))
                }
            }
    }

    private func execute(_ request: SOCKSRequest, context: ChannelHandlerContext) {
        negotiationTimer?.cancel()
        negotiationTimer = nil
        record.command = request.command
        record.destination = request.destination

        // Limits first: a refused session costs no lookup.
        switch services.limiter.acquire(user: identity.user, client: record.client.flatMap(IPAddress.init), limits: services.limits) {
        case .failure(let refusal):
            record.end = refusal.logName
            services.logger.notice(
                "session limit reached",
                metadata: ["session": "\(record.idText)", "user": "\(identity.user ?? "-")", "client": "\(record.clientText)", "limit": "\(refusal.description)"])
            // Per-user and per-client limits are policy (0x02); the server-wide cap is the server's
            // own state (0x01), worth retrying later.
            if case .server = refusal {
                perform(machine.requestFailed(.generalFailure))
            } else {
                perform(machine.requestFailed(.notAllowed))
            }
            return
        case .success(let grant):
            self.grant = grant
        }
        if request.command == .udpAssociate {
            associate(request, context: context)
            return
        }

        let policy = services.policy
        let subject = PolicySubject(user: identity.user, groups: identity.groups)
        let destination = request.destination
        var name: String?
        if case .domain(let domain) = destination.host {
            name = domain
            if case .deny(let reason) = policy.checkName(domain, port: destination.port, command: request.command, subject: subject) {
                deny(request, reason: reason)
                return
            }
        }
        let connector = services.connector
        let eventLoop = context.eventLoop
        // The policy sees every address a name has; the connector gets the ones it allows.
        func connectAllowed(_ addresses: [SocketAddress]) -> EventLoopFuture<any Channel> {
            guard self.context != nil, !finished else {
                return eventLoop.makeFailedFuture(ConnectFailure(code: .generalFailure, reason: "client gone"))
            }
            let ips = addresses.compactMap(IPAddress.init)
            switch policy.checkAddresses(ips, name: name, port: destination.port, command: request.command, subject: subject) {
            case .deny(let reason):
                return eventLoop.makeFailedFuture(PolicyRefusal(reason: reason))
            case .allow(let allowed, let reason):
                record.rule = reason.description
                let usable = addresses.filter { IPAddress($0).map(allowed.contains) ?? false }
                return connector.connect(to: usable, name: name ?? "", port: Int(destination.port), on: eventLoop)
            }
        }
        let connected: EventLoopFuture<any Channel>
        if let name {
            let cancellation = LookupCancellation()
            lookup = cancellation
            connected = connector.resolve(name, port: Int(destination.port), on: eventLoop, cancellation: cancellation)
                .assumeIsolated().flatMap(connectAllowed).nonisolated()
        } else {
            // An IP literal: nothing to look up.
            do {
                connected = connectAllowed([try destination.socketAddress()])
            } catch {
                connected = eventLoop.makeFailedFuture(ConnectFailure(code: .addressTypeNotSupported, reason: "\(error)"))
            }
        }
        connected.assumeIsolated()
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    guard self.context != nil, !finished else {
                        channel.close(promise: nil)
                        return
                    }
                    outbound = channel
                    record.remote = channel.remoteAddress
                    let bound = channel.localAddress.map(SOCKSEndpoint.init) ?? .unspecified
                    perform(machine.requestSucceeded(bound: bound))
                case .failure(let refusal as PolicyRefusal):
                    guard self.context != nil, !finished else { return }
                    deny(request, reason: refusal.reason)
                case .failure(let error):
                    let failure = OutboundConnector.failure(for: error)
                    services.logger.debug(
                        "connect failed",
                        metadata: ["session": "\(record.idText)", "dst": "\(request.destination)", "error": "\(failure.reason)"])
                    guard self.context != nil, !finished else { return }
                    perform(machine.requestFailed(failure.code))
                }
            }
    }

    /// UDP ASSOCIATE: a relay socket on the control connection's local IP; the reply names it (or
    /// the advertised address). The request's DST is where the client will send from.
    private func associate(_ request: SOCKSRequest, context: ChannelHandlerContext) {
        guard let local = context.channel.localAddress?.ipAddress, let client = context.channel.remoteAddress else {
            perform(machine.requestFailed(.generalFailure))
            return
        }
        let udp = services.udp
        let gate = UDPGate(
            policy: services.policy, subject: PolicySubject(user: identity.user, groups: identity.groups),
            resolver: services.connector.resolver, names: services.names, logger: services.logger, session: record.idText,
            client: record.clientText)
        let eventLoop = context.eventLoop
        let configuration = UDPRelayConfiguration(
            idleTimeout: udp.idle, clientToTargetLimit: grant?.upload, targetToClientLimit: grant?.download,
            maxDestinations: udp.maxDestinations)
        let expectedPort = request.destination.port == 0 ? nil : Int(request.destination.port)
        UDPAssociation.start(
            on: eventLoop, bindHost: local, ports: udp.ports, client: client, expectedPort: expectedPort,
            configuration: configuration, gate: { gate.check($0, on: eventLoop) }
        ) { [self] counters, end in
            record.udp = counters
            record.counters = RelayCounters(clientToTarget: counters.bytesUp, targetToClient: counters.bytesDown)
            record.end = record.end ?? end.rawValue
            context.close(promise: nil)
            finish(end: end.rawValue)
        }
        .assumeIsolated()
        .whenComplete { [self] result in
            switch result {
            case .success(let association):
                guard self.context != nil, !finished else {
                    association.close(.controlClosed)
                    return
                }
                self.association = association
                record.remote = association.boundAddress
                var bound = SOCKSEndpoint(association.boundAddress)
                if let advertised = udp.advertise, let address = try? SocketAddress(ipAddress: advertised, port: association.boundAddress.port ?? 0) {
                    bound = SOCKSEndpoint(address)
                }
                perform(machine.requestSucceeded(bound: bound))
            case .failure(let error):
                services.logger.error("cannot open a UDP relay socket", metadata: ["session": "\(record.idText)", "error": "\(error)"])
                guard self.context != nil, !finished else { return }
                perform(machine.requestFailed(.generalFailure))
            }
        }
    }

    /// Refuses a request the policy denies: reply 0x02, a log line naming the rule.
    private func deny(_ request: SOCKSRequest, reason: Policy.Reason) {
        record.rule = reason.description
        record.end = "denied"
        services.logger.notice(
            "request denied",
            metadata: [
                "session": "\(record.idText)", "user": "\(identity.user ?? "-")", "client": "\(record.clientText)",
                "cmd": "\(request.command)", "dst": "\(request.destination)", "rule": "\(reason)",
            ])
        perform(machine.requestFailed(.notAllowed))
    }

    private func startRelay(reply: ByteBuffer, context: ChannelHandlerContext) {
        if association != nil {
            record.reply = .succeeded
            buffer = ByteBuffer()
            context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
            return
        }
        guard let target = outbound else { return }
        record.reply = .succeeded
        context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
        let payload = buffer.readableBytes > 0 ? buffer : nil
        buffer = ByteBuffer()
        do {
            let relayConfiguration = RelayConfiguration(
                idleTimeout: services.timeouts.idle, clientToTargetLimit: grant?.upload, targetToClientLimit: grant?.download)
            relay = try TCPRelay.start(
                client: context.channel, target: target, configuration: relayConfiguration,
                initialPayload: payload, clientInputClosed: clientInputClosed
            ) { [self] outcome in
                record.counters = outcome.counters
                finish(end: outcome.end.rawValue)
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } catch {
            services.logger.error("cannot start the relay", metadata: ["session": "\(record.idText)", "error": "\(error)"])
            target.close(promise: nil)
            context.close(promise: nil)
        }
    }

    private func negotiationTimedOut() {
        negotiationTimer = nil
        guard !machine.isFinished, relay == nil, outbound == nil else { return }
        record.end = record.end ?? "negotiation_timeout"
        context?.close(promise: nil)
    }

    /// Ends the session once: stops its timer, leaves the registry, writes the access-log line.
    private func finish(end: String) {
        guard !finished else { return }
        finished = true
        negotiationTimer?.cancel()
        negotiationTimer = nil
        lookup?.cancel()
        lookup = nil
        services.registry.remove(record.id)
        if let grant {
            services.limiter.release(grant)
            self.grant = nil
        }
        record.end = record.end ?? end
        services.accessLogger.info("session", metadata: record.metadata(user: identity.user ?? record.user))
    }
}

/// What the access log says of a session.
struct SessionRecord {
    let id: UInt64
    let listener: String
    let start = NIODeadline.now()
    var client: SocketAddress?
    var user: String?
    var command: SOCKSCommand?
    var destination: SOCKSEndpoint?
    var remote: SocketAddress?
    var rule: String?
    var reply: SOCKSReplyCode?
    var counters = RelayCounters()
    var udp: UDPCounters?
    var end: String?

    init(id: UInt64, listener: String) {
        self.id = id
        self.listener = listener
    }

    var idText: String { String(id, radix: 16) }
    var clientText: String { client.map(Self.text) ?? "-" }

    static func text(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    func metadata(user: String?) -> Logger.Metadata {
        let elapsed = NIODeadline.now() - start
        let seconds = Double(elapsed.nanoseconds) / 1e9
        var metadata = Logger.Metadata(minimumCapacity: udp == nil ? 13 : 17)
        metadata["session"] = .string(idText)
        metadata["listener"] = .string(listener)
        metadata["client"] = .string(clientText)
        metadata["user"] = .string(user ?? "-")
        metadata["cmd"] = .string(command?.description ?? "-")
        metadata["dst"] = .string(destination?.description ?? "-")
        metadata["remote"] = .string(remote.map(Self.text) ?? "-")
        metadata["rule"] = .string(rule ?? "-")
        metadata["reply"] = .string(reply.map { String($0.rawValue) } ?? "-")
        metadata["up"] = .string(String(counters.clientToTarget))
        metadata["down"] = .string(String(counters.targetToClient))
        metadata["duration"] = .string(String((seconds * 1000).rounded() / 1000))
        metadata["end"] = .string(end ?? "-")
        if let udp {
            metadata["dgrams_up"] = .string(String(udp.datagramsUp))
            metadata["dgrams_down"] = .string(String(udp.datagramsDown))
            metadata["destinations"] = .string(String(udp.destinations))
            metadata["dropped"] = .string(String(udp.dropped))
        }
        return metadata
    }
}

/// The policy refused every address of a destination.
struct PolicyRefusal: Error {
    var reason: Policy.Reason
}

extension ServerNegotiation.Failure {
    /// The `end` field of the access log.
    var logName: String {
        switch self {
        case .protocolError: return "protocol_error"
        case .noAcceptableMethod: return "no_acceptable_method"
        case .authenticationFailed: return "auth_failed"
        case .commandNotSupported: return "command_not_supported"
        case .requestFailed: return "request_failed"
        case .earlyDataLimitExceeded: return "early_data_limit"
        case .clientClosed: return "client_closed"
        }
    }
}
