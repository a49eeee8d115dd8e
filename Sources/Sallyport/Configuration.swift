import NIOCore
import SOCKSProtocol
import SallyportAuth
import SallyportPolicy

/// Everything the server is told by its configuration file (or the embedded default).
public struct ServerConfiguration: Sendable, Hashable {
    /// Where to accept clients.
    public var listeners: [ListenerConfiguration]
    public var timeouts: Timeouts
    public var limits: Limits
    public var log: LogConfiguration
    public var relay: RelaySettings
    public var auth: AuthenticationSettings
    public var udp: UDPSettings
    public var dns = DNSSettings()
    /// Let a listener on a non-loopback address offer method `none` (an open proxy for whoever
    /// reaches it). Off by default: such a configuration is refused.
    public var allowUnauthenticatedRemote: Bool
    /// Who may connect, and who may reach what.
    public var policy: Policy
    /// Things worth saying about a valid configuration (as: it has no rules, so allows nothing).
    public var warnings: [String] = []

    public init(
        listeners: [ListenerConfiguration] = [ListenerConfiguration(host: "127.0.0.1", port: 1080)],
        timeouts: Timeouts = Timeouts(),
        limits: Limits = Limits(),
        log: LogConfiguration = LogConfiguration(),
        relay: RelaySettings = RelaySettings(),
        auth: AuthenticationSettings = AuthenticationSettings(),
        allowUnauthenticatedRemote: Bool = false,
        policy: Policy = .allowPublic,
        udp: UDPSettings = UDPSettings()
    ) {
        self.udp = udp
        self.policy = policy
        self.listeners = listeners
        self.timeouts = timeouts
        self.limits = limits
        self.log = log
        self.relay = relay
        self.auth = auth
        self.allowUnauthenticatedRemote = allowUnauthenticatedRemote
    }

    /// Listeners that would serve method `none` to other hosts while that is not allowed.
    public var unauthenticatedRemoteListeners: [ListenerConfiguration] {
        guard !allowUnauthenticatedRemote else { return [] }
        return listeners.filter { $0.methods.contains(.none) && !$0.isLoopback }
    }

    /// True when some listener offers username/password.
    public var usesUsernameMethod: Bool {
        listeners.contains { $0.methods.contains(.usernamePassword) }
    }

    /// The embedded default: loopback only, method none, every public destination allowed and the
    /// special-address guard on.
    public static let embeddedDefault = ServerConfiguration()
}

/// One listening address and what it offers.
public struct ListenerConfiguration: Sendable, Hashable {
    /// An IP address literal (`127.0.0.1`, `::1`, `0.0.0.0`, `::`).
    public var host: String
    /// The port; 0 binds a free one.
    public var port: Int
    /// The authentication methods offered, most preferred first.
    public var methods: [AuthenticationMethod]

    public init(host: String, port: Int, methods: [AuthenticationMethod] = [.none]) {
        self.host = host
        self.port = port
        self.methods = methods
    }

    /// `host:port`, with an IPv6 host in brackets.
    public var addressDescription: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// True for 127.0.0.0/8 and ::1 (also in IPv4-mapped form): reachable from this host only.
    public var isLoopback: Bool {
        IPAddress(host)?.isLoopback ?? false
    }
}

/// UDP ASSOCIATE.
public struct UDPSettings: Sendable, Hashable {
    /// Serve UDP ASSOCIATE (reply 0x07 when off).
    public var enabled = true
    /// The address put in the reply's BND.ADDR instead of the socket's own, for a server behind NAT.
    public var advertise: String?
    /// Ports the relay sockets may use; nil for any free port.
    public var ports: ClosedRange<Int>?
    /// End an association when no datagram has moved for this long; nil never (the control
    /// connection still ends it).
    public var idle: TimeAmount? = .minutes(2)
    /// Destinations with an open socket at once per association (the least recently used closes).
    public var maxDestinations = 256
    /// Destinations of one association being checked (looked up) at once.
    public var maxPendingDestinations = 32
    /// Bytes one association may hold for destinations being checked.
    public var maxPendingBytes = 256 * 1024
    /// Refused destinations one association remembers, so that their datagrams cost no new check.
    public var refusedMemory = 256

    public init() {}
}

/// How username/password logins are checked.
public struct AuthenticationSettings: Sendable, Hashable {
    public var pam = PAMAuthenticator.Configuration()
    public var throttle = LoginThrottle.Configuration()
    /// How long a successful login is remembered (user + keyed hash of the password); 0 turns the
    /// cache off. Cleared on reload.
    public var cacheTTL: TimeAmount = .seconds(30)

    public init() {}
}

/// The name resolver shared by every session: its threads, its queue, each client's share, its cache.
public struct DNSSettings: Sendable, Hashable {
    /// Threads that run the system resolver (a restart changes it).
    public var threads = 16
    /// Lookups that may wait for a thread; past it lookups are refused at once.
    public var queue = 1024
    /// Lookups one client (an IPv4 address, an IPv6 /64) may have queued or running.
    public var perClient = 8
    /// How long an answer is reused; 0 turns the cache off.
    public var cacheTTL: TimeAmount = .seconds(30)
    /// How long a failed lookup is remembered.
    public var negativeTTL: TimeAmount = .seconds(5)
    /// Names the cache holds (the least recently used is forgotten).
    public var cacheSize = 4096

    public init() {}
}

/// Timeouts per phase of a session.
public struct Timeouts: Sendable, Hashable {
    /// From accept until the request is complete (slow or silent clients are closed).
    public var negotiation: TimeAmount = .seconds(10)
    /// For the request as a whole: the name lookup and the outbound connection (all addresses of
    /// a name included).
    public var connect: TimeAmount = .seconds(10)
    /// For one name lookup; past it the client gets reply 0x04 (host unreachable).
    public var dns: TimeAmount = .seconds(5)
    /// A relayed session with no byte moving either way for this long is closed; nil never.
    public var idle: TimeAmount? = .minutes(30)
    /// On SIGTERM/SIGINT, how long running sessions may go on before they are closed.
    public var shutdownGrace: TimeAmount = .seconds(10)

    public init() {}
}

/// Limits on what a client may use. 0 means no limit.
public struct Limits: Sendable, Hashable {
    /// Bytes a client may send ahead of the server's answer before it is closed.
    public var earlyDataBytes: Int = 64 * 1024
    /// Sessions alive at once on the whole server (negotiating ones included).
    public var maxSessions: Int = 0
    /// Sessions one authenticated user may have at once.
    public var sessionsPerUser: Int = 0
    /// Sessions one client IP may have at once.
    public var sessionsPerClient: Int = 0
    /// Bytes per second each way, shared by all sessions of one authenticated user.
    public var bandwidthPerUser: Int = 0

    public init() {}
}

/// Settings of the relay's sockets.
public struct RelaySettings: Sendable, Hashable {
    /// The largest single read from a socket; larger reads move more bytes per CPU second.
    public var receiveBufferBytes: Int = 1 << 20

    public init() {}
}

/// Where and how log lines are written.
public struct LogConfiguration: Sendable, Hashable {
    public enum Format: String, Sendable, Hashable, CaseIterable {
        case logfmt
        case json
    }

    public enum Level: String, Sendable, Hashable, CaseIterable {
        case trace, debug, info, notice, warning, error, critical
    }

    public var level: Level = .info
    public var format: Format = .logfmt

    public init(level: Level = .info, format: Format = .logfmt) {
        self.level = level
        self.format = format
    }
}
