import NIOCore

/// Collects every problem of one configuration file, with where it is.
final class ConfigProblems {
    let file: String
    private(set) var problems: [ConfigurationError.Problem] = []

    init(file: String) { self.file = file }

    func report(_ node: YAMLNode?, _ path: String, _ message: String) {
        report(line: node?.mark?.line, column: node?.mark?.column, path, message)
    }

    func report(line: Int?, column: Int?, _ path: String, _ message: String) {
        problems.append(.init(file: file, line: line, column: column, keyPath: path, message: message))
    }

    /// A path the file names (`to_file`, `auth.file`): relative to the file's directory unless absolute.
    func resolve(_ path: String) -> String {
        guard !path.hasPrefix("/"), let slash = file.lastIndex(of: "/") else { return path }
        return String(file[...slash]) + path
    }
}

/// One mapping of the configuration file, read key by key: each settings type reads its own
/// section, naming each key once; the keys it asked for are the known ones, and whatever else the
/// mapping holds is reported as unknown when the section is done.
struct ConfigSection {
    let problems: ConfigProblems
    /// The key path of this section (`timeouts`, `auth.pam`), empty for the file.
    let path: String
    private let entries: [String: (key: YAMLNode, value: YAMLNode)]
    private var known: [String] = []

    init(_ node: YAMLNode?, path: String, problems: ConfigProblems) {
        self.path = path
        self.problems = problems
        var entries: [String: (key: YAMLNode, value: YAMLNode)] = [:]
        if case .mapping(let mapping, _)? = node {
            for (key, value) in mapping { entries[key.scalar?.string ?? "\(key)"] = (key, value) }
        }
        self.entries = entries
    }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The value of `key`, if given; marks the key as known.
    mutating func node(_ key: String) -> YAMLNode? {
        known.append(key)
        guard let value = entries[key]?.value, !ConfigValues.isNull(value) else { return nil }
        return value
    }

    func report(_ node: YAMLNode?, _ key: String, _ message: String) {
        problems.report(node, keyPath(key), message)
    }

    /// Reads the sub-mapping at `key` with `read`; a value that is not a mapping is reported with
    /// the keys it may hold.
    mutating func section(_ key: String, _ read: (inout ConfigSection) -> Void) {
        guard let value = node(key) else { return }
        var section = ConfigSection(value, path: keyPath(key), problems: problems)
        read(&section)
        guard case .mapping = value else {
            problems.report(value, keyPath(key), "expected a mapping of keys (\(section.known.joined(separator: ", ")))")
            return
        }
        section.finish()
    }

    /// Reports the keys nobody asked for. At the top level, keys starting with `x-` are the
    /// file's own (a place for anchors that rules and listeners then merge in) and are skipped.
    func finish() {
        for (name, entry) in entries.sorted(by: { ($0.value.key.mark?.line ?? 0) < ($1.value.key.mark?.line ?? 0) }) where !known.contains(name) {
            if path.isEmpty, name.hasPrefix("x-") { continue }
            problems.report(entry.key, keyPath(name), "unknown key; known keys here: \(known.joined(separator: ", "))")
        }
    }

    // MARK: Typed values: each sets `target` only when the value is good.

    mutating func string(_ key: String) -> String? {
        guard let value = node(key) else { return nil }
        return ConfigValues.scalar(value, keyPath(key), problems)
    }

    mutating func bool(_ key: String, into target: inout Bool) {
        guard let value = node(key), let text = ConfigValues.scalar(value, keyPath(key), problems) else { return }
        switch text {
        case "true", "yes", "on": target = true
        case "false", "no", "off": target = false
        default: report(value, key, "'\(text)' is not true or false")
        }
    }

    mutating func integer(_ key: String, range: ClosedRange<Int>, into target: inout Int) {
        guard let value = node(key), let text = ConfigValues.scalar(value, keyPath(key), problems) else { return }
        guard let number = Int(text), range.contains(number) else {
            report(value, key, "'\(text)' is not a whole number from \(range.lowerBound) to \(range.upperBound)")
            return
        }
        target = number
    }

    /// A duration: a number of seconds, or a number with `ms`, `s`, `m` or `h`.
    mutating func duration(_ key: String, into target: inout TimeAmount) {
        if let time = readDuration(key, allowZero: false) { target = time }
    }

    /// A duration where 0 means "off" (nil).
    mutating func duration(_ key: String, into target: inout TimeAmount?) {
        if let time = readDuration(key, allowZero: true) { target = time == .zero ? nil : time }
    }

    /// A duration where 0 is a value of its own.
    mutating func durationOrZero(_ key: String, into target: inout TimeAmount) {
        if let time = readDuration(key, allowZero: true) { target = time }
    }

    private mutating func readDuration(_ key: String, allowZero: Bool) -> TimeAmount? {
        guard let value = node(key), let text = ConfigValues.scalar(value, keyPath(key), problems) else { return nil }
        guard let time = ConfigValues.duration(text), allowZero || time > .zero else {
            let zero = allowZero ? " (0 turns it off)" : ""
            report(value, key, "'\(text)' is not a duration; write a number of seconds or one with a unit: 500ms, 10s, 5m, 1h\(zero)")
            return nil
        }
        return time
    }

    /// A size in bytes: a whole number, or one with `KiB`, `MiB` or `GiB`.
    mutating func byteSize(_ key: String, range: ClosedRange<Int>, into target: inout Int) {
        guard let value = node(key), let text = ConfigValues.scalar(value, keyPath(key), problems) else { return }
        guard let size = ConfigValues.byteSize(text), range.contains(size) else {
            report(value, key, "'\(text)' is not a size from \(range.lowerBound) to \(range.upperBound) bytes; write bytes or use KiB, MiB")
            return
        }
        target = size
    }

    mutating func choice<Value: RawRepresentable & CaseIterable>(_ key: String, into target: inout Value) where Value.RawValue == String {
        guard let value = node(key), let text = ConfigValues.scalar(value, keyPath(key), problems) else { return }
        guard let chosen = Value(rawValue: text) else {
            report(value, key, "unknown value '\(text)'; expected one of: \(Value.allCases.map(\.rawValue).joined(separator: ", "))")
            return
        }
        target = chosen
    }

    /// A value turned by `convert`, which explains what is wrong with a bad one.
    mutating func value<Value>(_ key: String, _ convert: (String) -> Result<Value, ConfigValues.Message>) -> Value? {
        guard let value = node(key), let text = ConfigValues.scalar(value, keyPath(key), problems) else { return nil }
        switch convert(text) {
        case .success(let result): return result
        case .failure(let message):
            report(value, key, message.text)
            return nil
        }
    }

    /// A list of scalars (a single scalar counts as a list of one), each turned by `convert`;
    /// nil when any item is bad (each is reported).
    mutating func list<Value>(_ key: String, _ convert: (String) -> Result<Value, ConfigValues.Message>) -> [Value]? {
        guard let value = node(key) else { return nil }
        return ConfigValues.list(value, keyPath(key), problems, convert)
    }
}

/// Reading single YAML values.
enum ConfigValues {
    /// A problem found in one value.
    struct Message: Error {
        var text: String
        init(_ text: String) { self.text = text }
    }

    static func isNull(_ node: YAMLNode) -> Bool {
        node.scalar?.isNull ?? false
    }

    static func scalar(_ node: YAMLNode, _ path: String, _ problems: ConfigProblems) -> String? {
        guard let scalar = node.scalar, !scalar.isNull else {
            problems.report(node, path, "expected a single value")
            return nil
        }
        return scalar.string
    }

    static func list<Value>(
        _ node: YAMLNode, _ path: String, _ problems: ConfigProblems, _ convert: (String) -> Result<Value, Message>
    ) -> [Value]? {
        let items: [YAMLNode]
        switch node {
        case .sequence(let sequence, _): items = sequence
        case .scalar: items = [node]
        default:
            problems.report(node, path, "expected a list")
            return nil
        }
        guard !items.isEmpty else {
            problems.report(node, path, "an empty list matches nothing; leave the key out to match everything")
            return nil
        }
        var values: [Value] = []
        for (index, item) in items.enumerated() {
            guard let text = scalar(item, "\(path)[\(index)]", problems) else { continue }
            switch convert(text) {
            case .success(let value): values.append(value)
            case .failure(let message): problems.report(item, "\(path)[\(index)]", message.text)
            }
        }
        return values.count == items.count ? values : nil
    }

    static func duration(_ text: String) -> TimeAmount? {
        let units: [(String, Int64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)]
        var number = Substring(text)
        var scale: Int64 = 1_000_000_000
        for (suffix, nanoseconds) in units where text.hasSuffix(suffix) {
            number = text.dropLast(suffix.count)
            scale = nanoseconds
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0, value * Double(scale) < 1e18 else { return nil }
        return .nanoseconds(Int64(value * Double(scale)))
    }

    static func byteSize(_ text: String) -> Int? {
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40)]
        var number = Substring(text)
        var scale = 1
        for (suffix, bytes) in units where text.hasSuffix(suffix) {
            number = text.dropLast(suffix.count)
            scale = bytes
            break
        }
        guard let value = Int(number.trimmingSpaces) else { return nil }
        let (size, overflow) = value.multipliedReportingOverflow(by: scale)
        return overflow ? nil : size
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var result = self
        while result.first == " " { result.removeFirst() }
        while result.last == " " { result.removeLast() }
        return result
    }
}
