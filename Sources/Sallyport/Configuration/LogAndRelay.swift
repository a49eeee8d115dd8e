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
