import NIOCore
import SOCKSProtocol

/// Everything the server is told by its configuration file (or the embedded default).
public struct ServerConfiguration: Sendable, Hashable {
    /// Where to accept clients.
    public var listeners: [ListenerConfiguration]
    public var timeouts: Timeouts
    public var limits: Limits
    public var log: LogConfiguration
    public var relay: RelaySettings

    public init(
        listeners: [ListenerConfiguration] = [ListenerConfiguration(host: "127.0.0.1", port: 1080)],
        timeouts: Timeouts = Timeouts(),
        limits: Limits = Limits(),
        log: LogConfiguration = LogConfiguration(),
        relay: RelaySettings = RelaySettings()
    ) {
        self.listeners = listeners
        self.timeouts = timeouts
        self.limits = limits
        self.log = log
        self.relay = relay
    }

    /// The embedded default: loopback only, method none.
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
}

/// Timeouts per phase of a session.
public struct Timeouts: Sendable, Hashable {
    /// From accept until the request is complete (slow or silent clients are closed).
    public var negotiation: TimeAmount = .seconds(10)
    /// For the outbound connection, all addresses of a name included.
    public var connect: TimeAmount = .seconds(10)
    /// A relayed session with no byte moving either way for this long is closed; nil never.
    public var idle: TimeAmount? = .minutes(30)
    /// On SIGTERM/SIGINT, how long running sessions may go on before they are closed.
    public var shutdownGrace: TimeAmount = .seconds(10)

    public init() {}
}

/// Limits on what a client may use.
public struct Limits: Sendable, Hashable {
    /// Bytes a client may send ahead of the server's answer before it is closed.
    public var earlyDataBytes: Int = 64 * 1024

    public init() {}
}

/// Settings of the relay's sockets.
public struct RelaySettings: Sendable, Hashable {
    /// The largest single read from a socket; larger reads move more bytes per CPU second.
    public var receiveBufferBytes: Int = 256 * 1024

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
