import NIOCore

/// Settings of the relay's sockets.
public struct RelaySettings: Sendable, Hashable {
    /// The largest single read from a socket; larger reads move more bytes per CPU second.
    public var receiveBufferBytes: Int = 1 << 20
    /// TCP keepalive on both sides of every relayed session; nil: off.
    public var keepalive: TCPKeepalive? = TCPKeepalive()

    public init() {}
}

/// TCP keepalive probes: after `idle` without a segment, a probe every `interval`; `count`
/// unanswered probes end the connection (ETIMEDOUT), and with it the session.
public struct TCPKeepalive: Sendable, Hashable {
    public var idle: TimeAmount = .seconds(60)
    public var interval: TimeAmount = .seconds(10)
    public var count: Int = 5

    public init(idle: TimeAmount = .seconds(60), interval: TimeAmount = .seconds(10), count: Int = 5) {
        self.idle = idle
        self.interval = interval
        self.count = count
    }

    /// How long a vanished peer holds its session at most once the connection went quiet.
    public var deadline: TimeAmount { idle + interval * Int64(count) }
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
    /// A file for the access log (one line per session), reopened on SIGUSR1; nil: standard error,
    /// with the other lines.
    public var accessFile: String?

    public init(level: Level = .info, format: Format = .logfmt, accessFile: String? = nil) {
        self.level = level
        self.format = format
        self.accessFile = accessFile
    }
}

extension RelaySettings {
    mutating func read(_ section: inout ConfigSection) {
        section.byteSize("receive_buffer", range: 4096...(16 << 20), into: &receiveBufferBytes)
        if let value = section.node("keepalive"), case .scalar = value {
            // 0 (or off) turns it off; anything else must be the mapping.
            if let text = ConfigValues.scalar(value, section.keyPath("keepalive"), section.problems) {
                if ["0", "off", "false", "no"].contains(text) {
                    keepalive = nil
                } else {
                    section.report(value, "keepalive", "'\(text)' is not 0 (off) or a mapping {idle: 60s, interval: 10s, count: 5}")
                }
            }
            return
        }
        section.section("keepalive") { settings in
            var keepalive = self.keepalive ?? TCPKeepalive()
            // The kernel counts in whole seconds, up to 32767.
            for (key, target) in [("idle", \TCPKeepalive.idle), ("interval", \TCPKeepalive.interval)] {
                var time = keepalive[keyPath: target]
                settings.duration(key, into: &time)
                let seconds = time.nanoseconds / 1_000_000_000
                if time.nanoseconds % 1_000_000_000 != 0 || !(1...32767).contains(seconds) {
                    settings.report(settings.node(key), key, "keepalive times are whole seconds from 1s to 32767s")
                } else {
                    keepalive[keyPath: target] = time
                }
            }
            settings.integer("count", range: 1...127, into: &keepalive.count)
            self.keepalive = keepalive
        }
    }
}

extension LogConfiguration {
    mutating func read(_ section: inout ConfigSection) {
        section.choice("level", into: &level)
        section.choice("format", into: &format)
        if let path = section.value("access_file", { path in
            path.hasPrefix("/") && !path.hasSuffix("/")
                ? .success(path) : .failure(ConfigValues.Message("'\(path)' is not an absolute file path (as /var/log/sallyport/access.log)"))
        }) {
            accessFile = path
        }
    }
}
