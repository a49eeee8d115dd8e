import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SOCKSProtocol
import SallyportAuth
import SallyportRelay
import ServiceLifecycle

/// Why the server could not start.
public struct StartupError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// The SOCKS5 server: listeners, sessions and their shutdown.
///
/// Use `start()` and `shutdown()` directly (tests do), or run it as a `Service` in a `ServiceGroup`,
/// which starts it, waits for SIGTERM/SIGINT and then shuts it down gracefully.
public final class SallyportServer: Service, Sendable {
    public let configuration: ServerConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let services: SessionServices
    private let state = NIOLockedValueBox<State>(.idle)
    /// The PAM authenticator this server made from its configuration (and so shuts down).
    private let ownedPAM: PAMAuthenticator?

    private enum State {
        case idle
        case running([any Channel])
        case stopped
    }

    /// - Parameters:
    ///   - authenticator: checks username/password logins; required when a listener offers `username`.
    ///   - logger: lifecycle and error lines; `accessLogger` gets one line per session.
    public init(
        configuration: ServerConfiguration,
        authenticator: (any Authenticator)? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        accessLogger: Logger? = nil
    ) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        var authenticator = authenticator
        var ownedPAM: PAMAuthenticator?
        if authenticator == nil, configuration.usesUsernameMethod {
            let pam = PAMAuthenticator(configuration: configuration.auth.pam)
            ownedPAM = pam
            authenticator = ThrottledAuthenticator(base: pam, configuration: configuration.auth.throttle, logger: logger)
        }
        self.ownedPAM = ownedPAM
        self.services = SessionServices(
            timeouts: configuration.timeouts,
            limits: configuration.limits,
            policy: configuration.policy,
            authenticator: authenticator,
            connector: OutboundConnector(
                resolver: HostResolver(threadPool: .singleton),
                connectTimeout: configuration.timeouts.connect,
                receiveBufferBytes: configuration.relay.receiveBufferBytes),
            logger: logger,
            accessLogger: accessLogger ?? logger,
            registry: SessionRegistry(),
            limiter: SessionLimiter())
    }

    /// The number of sessions alive now (negotiating or relaying).
    public var activeSessions: Int { services.registry.count }

    /// Binds every listener. Returns the bound addresses, in the order of the configuration.
    @discardableResult
    public func start() async throws -> [SocketAddress] {
        if configuration.listeners.contains(where: { $0.methods.contains(.usernamePassword) }), services.authenticator == nil {
            throw StartupError(description: "a listener offers method 'username' but no authenticator is configured")
        }
        if let listener = configuration.unauthenticatedRemoteListeners.first {
            throw StartupError(
                description: "\(listener.addressDescription) is not a loopback address but offers method 'none', which would make an open proxy; offer username there, or set allow_unauthenticated_remote: true if that is really meant")
        }
        var channels: [any Channel] = []
        do {
            for listener in configuration.listeners {
                channels.append(try await bind(listener))
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        let addresses = channels.compactMap(\.localAddress)
        state.withLockedValue { $0 = .running(channels) }
        logger.info(
            "listening",
            metadata: ["addresses": "\(addresses.map(SessionRecord.text).joined(separator: ","))"])
        return addresses
    }

    private func bind(_ listener: ListenerConfiguration) async throws -> any Channel {
        let services = self.services
        let negotiation = ServerNegotiation.Configuration(
            methods: listener.methods, commands: [.connect], maximumEarlyData: configuration.limits.earlyDataBytes)
        let name = listener.addressDescription
        let receiveBuffer = configuration.relay.receiveBufferBytes
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: receiveBuffer))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let listenerName = channel.parent?.localAddress.map(SessionRecord.text) ?? name
                    try channel.pipeline.syncOperations.addHandler(
                        SOCKSServerHandler(services: services, negotiation: negotiation, listener: listenerName))
                }
            }
        do {
            return try await bootstrap.bind(host: listener.host, port: listener.port).get()
        } catch {
            throw StartupError(description: "cannot listen on \(name): \(error); is another process using the port, or is the address not on this host?")
        }
    }

    /// Stops accepting, lets running sessions go on for up to `grace`, then closes them.
    public func shutdown(grace: TimeAmount? = nil) async {
        let channels: [any Channel] = state.withLockedValue { state in
            defer { state = .stopped }
            if case .running(let channels) = state { return channels }
            return []
        }
        for channel in channels { try? await channel.close() }
        let grace = grace ?? configuration.timeouts.shutdownGrace
        let deadline = NIODeadline.now() + grace
        let waiting = services.registry.count
        if waiting > 0 {
            logger.info("draining sessions", metadata: ["sessions": "\(waiting)", "grace": "\(grace)"])
        }
        while services.registry.count > 0, NIODeadline.now() < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if services.registry.count > 0 {
            logger.info("closing sessions after grace period", metadata: ["sessions": "\(services.registry.count)"])
            services.registry.closeAll()
            let closeDeadline = NIODeadline.now() + .seconds(2)
            while services.registry.count > 0, NIODeadline.now() < closeDeadline {
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        await ownedPAM?.shutdown()
        logger.info("stopped")
    }

    /// `Service`: starts, waits for graceful shutdown (SIGTERM/SIGINT through the service group),
    /// then drains and stops.
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await shutdown()
    }
}
