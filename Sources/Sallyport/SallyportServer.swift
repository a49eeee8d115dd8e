import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SOCKSProtocol
import SallyportAuth
import SallyportPolicy
import SallyportRelay
import ServiceLifecycle

/// Why the server could not start, or could not take a new configuration.
public struct StartupError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// The SOCKS5 server: listeners, sessions, reloads and shutdown.
///
/// Use `start()`, `reload(_:)` and `shutdown()` directly (tests do), or run it as a `Service` in a
/// `ServiceGroup`, which starts it, waits for SIGTERM/SIGINT and then shuts it down gracefully.
public final class SallyportServer: Service, Sendable {
    let group: any EventLoopGroup
    let logger: Logger
    private let accessLogger: Logger
    /// Injected by the caller (tests); when nil, the server makes a PAM authenticator as needed.
    private let injectedAuthenticator: (any Authenticator)?
    /// Outlive reloads: live sessions and the limits' counters.
    let registry = SessionRegistry()
    private let limiter = SessionLimiter()
    let gate = ConnectionGate()
    /// Every name lookup of every session goes through it; it outlives reloads.
    let resolver: NameResolver
    let generation: NIOLockedValueBox<Generation>
    let state = NIOLockedValueBox<State>(.idle)
    private let trimmer = NIOLockedValueBox<MemoryTrimmer?>(nil)
    /// Reads this host's addresses again every `hostAddressInterval` (a DHCP lease, a VPN up).
    private let addressWatch = NIOLockedValueBox<RepeatedTask?>(nil)
    static let hostAddressInterval: TimeAmount = .seconds(30)
    /// What the admin listener reports: its address, when the server started, the last reload.
    let admin = NIOLockedValueBox(AdminState())
    /// Counts of sessions, logins, lookups and reloads, for `/metrics`.
    public let metrics: ServerMetrics
    /// Tells systemd when the server is ready, reloading and stopping.
    public let notifier: SystemdNotifier
    /// Each user's bytes, saved in `state_dir`, and the quotas judged against them; outlives reloads.
    let usage: UsageKeeper

    /// One configuration and what was made from it; new sessions take the current one.
    struct Generation: Sendable {
        var configuration: ServerConfiguration
        var services: SessionServices
        /// What the server made to check logins (none when they are checked by an injected one).
        var checkers: LoginCheckers
        /// By listener index (a reload keeps the bound listeners): what each one's sessions get.
        var listeners: [ListenerPlan]

        init(
            configuration: ServerConfiguration, services: SessionServices, checkers: LoginCheckers, injected: (any Authenticator)?, tls: [ServerTLS?]
        ) {
            self.configuration = configuration
            self.services = services
            self.checkers = checkers
            // BIND is always served: the rules decide who may (none by default).
            let commands: Set<SOCKSCommand> = services.udp.enabled ? [.connect, .udpAssociate, .bind] : [.connect, .bind]
            listeners = configuration.listeners.enumerated().map { index, listener in
                var own = services
                own.authenticator = injected ?? checkers.authenticator(for: configuration.checker(for: listener))
                let negotiation = ServerNegotiation.Configuration(
                    methods: listener.methods, commands: commands, maximumEarlyData: configuration.limits.earlyDataBytes,
                    socks4: listener.socks4)
                return ListenerPlan(negotiation: negotiation, services: own, proxy: listener.proxyProtocol, tls: index < tls.count ? tls[index] : nil)
            }
        }
    }

    /// What one listener's sessions get: how they negotiate, their services (with the listener's
    /// own login checker), the PROXY protocol header expected first, if any, and TLS, if any.
    struct ListenerPlan: Sendable {
        var negotiation: ServerNegotiation.Configuration
        var services: SessionServices
        var proxy: ProxyExpectation?
        var tls: ServerTLS?
    }

    /// Where the server is in its life; the one place that says so.
    enum State {
        case idle
        /// Accepting on these listening sockets.
        case running([any Channel])
        /// Shutting down: not ready from the start (`/readyz` 503), still accepting on these
        /// sockets through `timeouts.shutdown_delay`, then draining with them closed.
        case stopping([any Channel])
        case stopped
    }

    /// - Parameters:
    ///   - authenticator: checks username/password logins; when nil and a listener offers
    ///     `username`, the server checks them through PAM as configured.
    ///   - logger: lifecycle and error lines; `accessLogger` gets one line per session.
    public init(
        configuration: ServerConfiguration,
        authenticator: (any Authenticator)? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        accessLogger: Logger? = nil,
        notifier: SystemdNotifier = SystemdNotifier()
    ) {
        self.group = group
        self.notifier = notifier
        self.logger = logger
        self.accessLogger = accessLogger ?? logger
        self.injectedAuthenticator = authenticator
        let metrics = ServerMetrics()
        self.metrics = metrics
        let resolver = NameResolver(settings: .init(configuration), observe: { metrics.dnsLookup($0, duration: $1) })
        self.resolver = resolver
        let usage = UsageKeeper(
            ledger: UsageLedger(), settings: configuration.usage, registry: registry, logger: logger, files: Self.backgroundPool)
        self.usage = usage
        self.generation = NIOLockedValueBox(
            Self.makeGeneration(
                configuration, previous: nil, injectedAuthenticator: authenticator, logger: logger,
                accessLogger: accessLogger ?? logger, registry: registry, limiter: limiter, resolver: resolver, metrics: metrics,
                usage: usage.ledger))
    }

    /// The configuration new sessions use.
    public var configuration: ServerConfiguration { generation.withLockedValue { $0.configuration } }

    /// The number of sessions alive now (negotiating or relaying).
    public var activeSessions: Int { registry.count }

    private var currentServices: SessionServices { generation.withLockedValue { $0.services } }

    /// Binds every listener. Returns the bound addresses, in the order of the configuration.
    @discardableResult
    public func start() async throws -> [SocketAddress] {
        var configuration = self.configuration
        try validate(configuration)
        let tls = try loadTLS(&configuration)
        generation.withLockedValue {
            var services = $0.services
            services.upstreamTLS = tls.upstreams
        services.bind = configuration.bind
        services.relay = configuration.relay
            $0 = Generation(configuration: configuration, services: services, checkers: $0.checkers, injected: injectedAuthenticator, tls: tls.listeners)
        }
        // The saved totals first: no session may start before a quota can be judged.
        try usage.start(on: group.next(), persist: configuration.usesUsernameMethod)
        var channels: [any Channel] = []
        var addresses: [SocketAddress] = []
        do {
            // One listening socket per event loop on each address (SO_REUSEPORT): the kernel spreads
            // accepts over them, and a session lives on the loop that accepted it, with no hand-over
            // between threads.
            let loops = Array(group.makeIterator())
            for index in configuration.listeners.indices {
                var listener = configuration.listeners[index]
                for (number, loop) in loops.enumerated() {
                    let channel = try await bind(listenerIndex: index, listener, on: loop)
                    channels.append(channel)
                    if number == 0, let address = channel.localAddress {
                        addresses.append(address)
                        listener.port = address.port ?? listener.port
                    }
                }
            }
            if configuration.admin.enabled {
                // Kept apart from the SOCKS listeners: it stays open while sessions drain, so that
                // /readyz says 503 to balancers and /metrics and /sessions show the drain.
                try await bindAdmin(configuration.admin)
            }
        } catch {
            for channel in channels { try? await channel.close() }
            await admin.withLockedValue { $0.listener }?.close()
            throw error
        }
        state.withLockedValue { $0 = .running(channels) }
        admin.withLockedValue { $0.listeners = addresses }
        trimmer.withLockedValue { $0 = MemoryTrimmer(registry: registry, eventLoop: group.next(), pool: Self.backgroundPool) }
        addressWatch.withLockedValue {
            $0 = group.next().scheduleRepeatedTask(initialDelay: Self.hostAddressInterval, delay: Self.hostAddressInterval) { [weak self] _ in
                self?.takeHostAddresses(Self.hostAddresses())
            }
        }
        logger.info("listening", metadata: ["addresses": "\(addresses.map(\.endpointText).joined(separator: ","))"])
        for warning in configuration.warnings { logger.warning("\(warning)") }
        return addresses
    }

    /// Takes a new configuration for the sessions that start from now on; running sessions go on
    /// untouched. Throws, keeping the running configuration, when it cannot be used. SOCKS
    /// listeners are not rebound: a change of addresses takes effect at the next start (a warning
    /// says so). The admin listener follows the file at once (`followAdmin`).
    public func reload(_ configuration: ServerConfiguration) async throws {
        let current = self.configuration
        var next = configuration
        let sameAddresses = next.listeners.map { "\($0.host) \($0.port)" } == current.listeners.map { "\($0.host) \($0.port)" }
        if !sameAddresses {
            // Keep serving on the bound listeners, with the methods they were started with.
            next.listeners = current.listeners
            next.warnings.append("the listen addresses changed; they take effect at the next restart, the running listeners stay as they are")
        }
        try validate(next)
        // Read before anything changes: certificate files that cannot be used keep the old pair.
        let tls = try loadTLS(&next)
        try await followAdmin(next.admin)
        let old = generation.withLockedValue { $0 }
        let fresh = Self.makeGeneration(
            next, previous: old, injectedAuthenticator: injectedAuthenticator, logger: logger, accessLogger: accessLogger,
            registry: registry, limiter: limiter, resolver: resolver, metrics: metrics, usage: usage.ledger, tls: tls)
        resolver.update(.init(next))
        if let warning = usage.update(next.usage, active: next.usesUsernameMethod) { next.warnings.append(warning) }
        if next.dns.threads != old.configuration.dns.threads {
            next.warnings.append("dns.threads changed; it takes effect at the next restart")
        }
        generation.withLockedValue { $0 = fresh }
        let keepalive = next.relay.keepalive
        if keepalive != old.configuration.relay.keepalive, case .running(let listeners) = state.withLockedValue({ $0 }) {
            for listener in listeners {
                listener.eventLoop.execute {
                    if let options = listener.syncOptions { try? TCPKeepalive.apply(keepalive, to: options) }
                }
            }
        }
        if let oldPool = old.checkers.pool, fresh.checkers.pool !== oldPool {
            Task { await oldPool.shutdown() }
        }
        admin.withLockedValue { $0.lastReload = "succeeded at \(LineLogHandler.timestamp())" }
        metrics.configReload(succeeded: true)
        logger.info("configuration reloaded", metadata: ["rules": "\(next.policy.rules.count)"])
        for warning in next.warnings { logger.warning("\(warning)") }
    }

    private func validate(_ configuration: ServerConfiguration) throws {
        let errors = configuration.validate(externalAuthenticator: injectedAuthenticator != nil).errors
        if !errors.isEmpty { throw StartupError(description: errors.map(\.message).joined(separator: "; ")) }
    }

    /// Builds what sessions need from a configuration, keeping what did not change.
    private static func makeGeneration(
        _ configuration: ServerConfiguration, previous: Generation?, injectedAuthenticator: (any Authenticator)?, logger: Logger,
        accessLogger: Logger, registry: SessionRegistry, limiter: SessionLimiter, resolver: NameResolver, metrics: ServerMetrics,
        usage: UsageLedger, tls: TLSFiles = TLSFiles()
    ) -> Generation {
        let checkers =
            injectedAuthenticator != nil
            ? LoginCheckers.none
            : LoginCheckers.make(
                configuration, previous: previous.map { ($0.configuration.auth, $0.checkers) }, logger: logger, metrics: metrics)
        metrics.limitUserSeries(to: configuration.admin.perUserMetricsLimit)
        var policy = configuration.policy
        policy.hostAddresses = Self.hostAddresses()
        var services = SessionServices(
            timeouts: configuration.timeouts,
            limits: configuration.limits,
            egress: Egress(policy: policy, resolver: resolver),
            authenticator: injectedAuthenticator,
            connector: OutboundConnector(receiveBufferBytes: configuration.relay.receiveBufferBytes, keepalive: configuration.relay.keepalive),
            logger: logger,
            accessLogger: accessLogger,
            registry: registry,
            limiter: limiter,
            udp: configuration.udp,
            metrics: metrics,
            perUserMetrics: configuration.admin.perUserMetrics,
            usage: usage,
            quotas: configuration.usage.quotas)
        // The wheels outlive a reload: a session keeps its loop's wheel whatever generation it is of.
        if let previous { services.timers = previous.services.timers }
        services.upstreamTLS = tls.upstreams
        services.bind = configuration.bind
        services.relay = configuration.relay
        return Generation(configuration: configuration, services: services, checkers: checkers, injected: injectedAuthenticator, tls: tls.listeners)
    }

    private func bind(listenerIndex: Int, _ listener: ListenerConfiguration, on loop: any EventLoop) async throws -> any Channel {
        let name = listener.addressDescription
        let relayOptions = RelayChannelOptions(receiveBufferBytes: configuration.relay.receiveBufferBytes)
        let label = NIOLockedValueBox<String?>(nil)
        let bootstrap = ServerBootstrap(group: loop, childGroup: loop)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.Types.SocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_REUSEPORT)), value: 1)
            // At the descriptor limit, pause accepting instead of retrying on every wake-up.
            .serverChannelInitializer { [logger, keepalive = configuration.relay.keepalive] channel in
                channel.eventLoop.makeCompletedFuture {
                    // Accepted sockets inherit keepalive from here (a reload sets it again).
                    if let options = channel.syncOptions { try TCPKeepalive.apply(keepalive, to: options) }
                    try channel.pipeline.syncOperations.addHandler(AcceptBackoff(listener: name, logger: logger))
                }
            }
            // TCP_NODELAY: accepted sockets inherit it from the listener, where ServerBootstrap sets it.
            .childChannelInitializer { [self] channel in
                // Each session takes the configuration current when it is accepted.
                let plan = generation.withLockedValue { $0.listeners[listenerIndex] }
                let listenerName = label.withLockedValue { label in
                    if let label { return label }
                    // The address it is bound to, with the port a configured port 0 became.
                    let bound = channel.parent?.localAddress?.endpointText ?? name
                    label = bound
                    return bound
                }
                // Behind a PROXY-protocol balancer every connection comes from the balancer: the
                // per-client count starts with the header there (sessions_per_client).
                if plan.proxy == nil, !admit(channel, limit: plan.services.limits.connectionsPerClient) { return channel.close() }
                return channel.eventLoop.makeCompletedFuture {
                    try relayOptions.apply(to: channel)
                    let session = Session(services: plan.services, negotiation: plan.negotiation, listener: listenerName, proxy: plan.proxy)
                    let pipeline = channel.pipeline.syncOperations
                    // The PROXY header comes first, then TLS (the reader puts it in after the header), then SOCKS.
                    if let proxy = plan.proxy {
                        try pipeline.addHandler(ProxyHeaderReader(session: session, version: proxy.version, tls: plan.tls))
                    } else if let tls = plan.tls {
                        try tls.addHandlers(to: pipeline)
                    }
                    try pipeline.addHandler(SOCKSServerHandler(session: session, tls: plan.tls))
                }
            }
        do {
            return try await bootstrap.bind(host: listener.host, port: listener.port).get()
        } catch {
            throw StartupError(description: "cannot listen on \(name): \(error); is another process using the port, or is the address not on this host?")
        }
    }

    /// Says not ready for `timeouts.shutdown_delay` while still accepting, stops accepting, lets
    /// running sessions go on for up to `grace`, then closes them.
    public func shutdown(grace: TimeAmount? = nil) async {
        let delay = configuration.timeouts.shutdownDelay
        let channels: [any Channel]? = state.withLockedValue { state in
            switch state {
            case .idle:
                state = .stopping([])
                return []
            case .running(let channels):
                state = .stopping(channels)
                return channels
            case .stopping, .stopped:
                return nil
            }
        }
        guard let channels else { return }
        if delay > .zero, !channels.isEmpty {
            logger.info("shutting down: not ready, still accepting", metadata: ["delay": "\(delay)"])
            try? await Task.sleep(for: .nanoseconds(delay.nanoseconds))
        }
        for channel in channels { try? await channel.close() }
        trimmer.withLockedValue { $0?.stop() }
        addressWatch.withLockedValue { $0?.cancel() }
        let grace = grace ?? configuration.timeouts.shutdownGrace
        let waiting = registry.count
        if waiting > 0 {
            logger.info("draining sessions", metadata: ["sessions": "\(waiting)", "grace": "\(grace)"])
        }
        let loop = group.next()
        if await !((try? ShutdownDrain.drain(registry, grace: grace, on: loop).get()) ?? false) {
            logger.info("closing sessions after grace period", metadata: ["sessions": "\(registry.count)"])
            registry.closeAll()
            _ = try? await ShutdownDrain.drain(registry, grace: .seconds(2), on: loop).get()
        }
        await usage.stop()
        await admin.withLockedValue { $0.listener }?.close()
        await generation.withLockedValue { $0.checkers.pool }?.shutdown()
        await resolver.shutdown()
        state.withLockedValue { $0 = .stopped }
        logger.info("stopped")
    }

    /// The thread `malloc_trim` and the usage saves run on, off the event loops.
    private static let backgroundPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        return pool
    }()

    /// `Service`: starts, waits for graceful shutdown (SIGTERM/SIGINT through the service group),
    /// then drains and stops.
    ///
    /// Started by systemd (`Type=notify`), it says READY=1 once every listener is bound and
    /// STOPPING=1 when it begins to drain.
    public func run() async throws {
        let addresses = try await start()
        notifier.ready(status: "listening on \(addresses.map(\.endpointText).joined(separator: ", "))")
        try? await gracefulShutdown()
        notifier.stopping(status: "draining \(registry.count) session(s)")
        await shutdown()
    }
}

extension NameResolver.Settings {
    /// The resolver's settings from a configuration.
    init(_ configuration: ServerConfiguration) {
        let dns = configuration.dns
        self.init(
            threads: dns.threads, queue: dns.queue, perClient: dns.perClient, timeout: configuration.timeouts.dns,
            cacheTTL: dns.cacheTTL, negativeTTL: dns.negativeTTL, cacheSize: dns.cacheSize)
    }
}
