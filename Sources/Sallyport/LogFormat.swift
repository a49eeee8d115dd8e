import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A swift-log handler that writes one line per entry, in logfmt or JSON, to a sink (stderr by
/// default). Each line is written with one `write(2)`, so lines from different threads never mix.
public struct LineLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let format: LogConfiguration.Format
    let sink: @Sendable (String) -> Void
    /// Each line starts with its syslog priority (`<6>`), which journald reads as the entry's.
    let syslogPrefix: Bool

    public init(
        label: String, level: Logger.Level, format: LogConfiguration.Format, syslogPrefix: Bool = false,
        sink: @escaping @Sendable (String) -> Void = LineLogHandler.standardError
    ) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.syslogPrefix = syslogPrefix
        self.sink = sink
    }

    /// Whether standard error is journald's stream: systemd sets `$JOURNAL_STREAM` to that
    /// stream's device and inode (a child whose stderr was redirected elsewhere inherits the
    /// variable, so both are compared).
    public static func standardErrorIsJournal(environment: [String: String]) -> Bool {
        let parts = environment["JOURNAL_STREAM"]?.split(separator: ":") ?? []
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(2, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    /// The syslog priority of a level (RFC 5424: 7 debug to 2 critical).
    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    /// Writes a line to standard error.
    public static let standardError: @Sendable (String) -> Void = { line in write(line, to: 2) }

    /// Writes a line to a descriptor, whole (one `write(2)` unless the kernel takes less).
    static func write(_ line: String, to descriptor: Int32) {
        var line = line
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata {
            if merged.isEmpty { merged = extra } else { merged.merge(extra) { $1 } }
        }
        var line = syslogPrefix ? "<\(Self.syslogPriority(event.level))>" : ""
        line += Self.formatLine(
            format: format, timestamp: Self.timestamp(), level: event.level, message: event.message.description,
            metadata: merged)
        line += "\n"
        sink(line)
    }

    /// Keys written first, in this order (the access log's, `SessionRecord.fieldOrder`); other
    /// keys follow in sorted order.
    static var keyOrder: [String] { SessionRecord.fieldOrder }

    static func formatLine(
        format: LogConfiguration.Format, timestamp: String, level: Logger.Level, message: String,
        metadata: Logger.Metadata
    ) -> String {
        // Built in place: the access log writes one of these per session.
        var line = ""
        line.reserveCapacity(96 + 24 * metadata.count)
        switch format {
        case .logfmt:
            line += "ts="
            line += timestamp
            line += " level="
            line += level.rawValue
            line += " msg="
            appendLogfmtValue(message, to: &line)
            func append(_ key: String, _ value: Logger.MetadataValue) {
                line += " "
                line += key
                line += "="
                switch value {
                case .string(let string): appendLogfmtValue(string, to: &line)
                default: appendLogfmtValue(value.description, to: &line)
                }
            }
            forEachInOrder(metadata, append)
        case .json:
            line += "{\"ts\":"
            line += jsonString(timestamp)
            line += ",\"level\":"
            line += jsonString(level.rawValue)
            line += ",\"msg\":"
            line += jsonString(message)
            func append(_ key: String, _ value: Logger.MetadataValue) {
                line += ","
                line += jsonString(key)
                line += ":"
                line += jsonValue(value)
            }
            forEachInOrder(metadata, append)
            line += "}"
        }
        return line
    }

    /// Calls `body` with the entries of `metadata`: those in `keyOrder` in that order, then the others sorted.
    static func forEachInOrder(_ metadata: Logger.Metadata, _ body: (String, Logger.MetadataValue) -> Void) {
        var known = 0
        for key in keyOrder {
            if let value = metadata[key] {
                body(key, value)
                known += 1
            }
        }
        if known < metadata.count {
            for key in metadata.keys.filter({ !keyOrder.contains($0) }).sorted() { body(key, metadata[key]!) }
        }
    }

    /// Appends `value` as it is when it needs no quoting, else as a quoted, escaped string.
    static func appendLogfmtValue(_ value: String, to line: inout String) {
        let needsQuotes = value.isEmpty || value.utf8.contains { $0 <= 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "=") || $0 >= 0x7F }
        line += needsQuotes ? jsonString(value) : value
    }

    /// A JSON value: numbers for values logged as numbers (`.stringConvertible` of an integer or
    /// a floating-point value), strings for everything else, whatever its text looks like (a user
    /// named `12345` stays a string).
    static func jsonValue(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let string):
            return jsonString(string)
        case .stringConvertible(let convertible):
            switch convertible {
            case is any BinaryInteger: return convertible.description
            case let number as Double where number.isFinite: return convertible.description
            default: return jsonString(convertible.description)
            }
        case .array(let values):
            return "[" + values.map(jsonValue).joined(separator: ",") + "]"
        case .dictionary(let dictionary):
            return "{" + dictionary.keys.sorted().map { "\(jsonString($0)):\(jsonValue(dictionary[$0]!))" }.joined(separator: ",") + "}"
        }
    }

    static func jsonString(_ value: String) -> String {
        var result = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20 || scalar.value >= 0x7F:
                // Controls, and everything past ASCII: C1 controls, bidi overrides, U+2028 and
                // look-alikes would reorder, break or disguise a line on a terminal or in a
                // viewer. Escaped, a line is ASCII and reads back to the same text.
                for unit in String(scalar).utf16 {
                    let hex = String(unit, radix: 16)
                    result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                }
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    /// UTC time as RFC 3339 with milliseconds.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let millis = Int(now.tv_nsec / 1_000_000)
        let millisText = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(millisText)Z"
    }
}

extension LogConfiguration.Level {
    /// The swift-log level.
    public var loggerLevel: Logger.Level {
        switch self {
        case .trace: return .trace
        case .debug: return .debug
        case .info: return .info
        case .notice: return .notice
        case .warning: return .warning
        case .error: return .error
        case .critical: return .critical
        }
    }
}
