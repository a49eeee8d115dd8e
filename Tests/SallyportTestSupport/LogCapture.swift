import Logging
import NIOConcurrencyHelpers
import Sallyport

/// Collects the log lines a server writes, for assertions.
public final class LogCapture: Sendable {
    private let box = NIOLockedValueBox<[String]>([])
    private let changes = Changes()

    public init() {}

    public var lines: [String] { box.withLockedValue { $0 } }
    public var text: String { lines.joined() }

    public func logger(label: String = "test", format: LogConfiguration.Format = .logfmt, level: Logger.Level = .trace) -> Logger {
        Logger(label: label) { label in
            LineLogHandler(label: label, level: level, format: format) { [box, changes] line in
                box.withLockedValue { $0.append(line) }
                changes.notify()
            }
        }
    }

    /// Lines of the access log (message `session`).
    public var sessionLines: [String] { lines.filter { $0.contains(" msg=session ") } }

    /// Waits until `predicate` holds for the captured lines, up to `timeout` seconds.
    public func wait(timeout: Double = 5, until predicate: @Sendable ([String]) -> Bool) async -> Bool {
        await changes.wait(timeout: timeout * sanitizerSlowdown) { predicate(self.lines) }
    }
}

/// Parses the `key=value` fields of a logfmt line.
public func logfmtFields(_ line: String) -> [String: String] {
    var fields: [String: String] = [:]
    var index = line.startIndex
    while index < line.endIndex {
        while index < line.endIndex, line[index] == " " || line[index] == "\n" { index = line.index(after: index) }
        guard let equals = line[index...].firstIndex(of: "=") else { break }
        let key = String(line[index..<equals])
        var valueStart = line.index(after: equals)
        var value = ""
        if valueStart < line.endIndex, line[valueStart] == "\"" {
            valueStart = line.index(after: valueStart)
            var cursor = valueStart
            while cursor < line.endIndex, line[cursor] != "\"" {
                if line[cursor] == "\\" { cursor = line.index(after: cursor) }
                value.append(line[cursor])
                cursor = line.index(after: cursor)
            }
            index = cursor < line.endIndex ? line.index(after: cursor) : cursor
        } else {
            let end = line[valueStart...].firstIndex(where: { $0 == " " || $0 == "\n" }) ?? line.endIndex
            value = String(line[valueStart..<end])
            index = end
        }
        fields[key] = value
    }
    return fields
}
