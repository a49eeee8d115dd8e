import NIOCore
import SallyportPolicy

/// Per-user usage totals and quotas: where the totals are kept, how often they are saved.
public struct UsageSettings: Sendable, Hashable {
    /// `state_dir`: where `usage.json` is saved; nil keeps the totals in memory only (tests).
    public var stateDirectory: String? = "/var/lib/sallyport"
    /// `usage.save_interval`: a crash loses at most this much counting.
    public var saveInterval: TimeAmount = .seconds(30)
    /// `usage.check_interval`: how often running sessions report their bytes and quotas are judged.
    public var checkInterval: TimeAmount = .seconds(2)
    public var quotas: [Quota] = []

    public init() {}
}

extension UsageSettings {
    mutating func read(_ root: inout ConfigSection) {
        if let directory = root.value("state_dir", { text -> Result<String, ConfigValues.Message> in
            text.hasPrefix("/") ? .success(text) : .failure(.init("'\(text)' is not an absolute path, as /var/lib/sallyport"))
        }) {
            stateDirectory = directory
        }
        root.section("usage") { usage in
            usage.duration("save_interval", into: &saveInterval)
            usage.duration("check_interval", into: &checkInterval)
            if saveInterval < .seconds(1) { usage.report(usage.node("save_interval"), "save_interval", "at least 1s: every save writes the whole file") }
            if checkInterval > .seconds(5) || checkInterval < .milliseconds(100) {
                usage.report(usage.node("check_interval"), "check_interval", "from 100ms to 5s: a quota is enforced within twice this")
            }
        }
        if let node = root.node("quotas") {
            quotas = Self.quotas(node, root.keyPath("quotas"), root.problems)
        }
    }

    static func quotas(_ node: YAMLNode, _ path: String, _ problems: ConfigProblems) -> [Quota] {
        guard case .sequence(let sequence, _) = node else {
            problems.report(node, path, "expected a list of {who, bytes, period} entries")
            return []
        }
        var result: [Quota] = []
        for (index, item) in sequence.enumerated() {
            var entry = ConfigSection(item, path: "\(path)[\(index)]", problems: problems)
            let who = entry.list("who", EgressRule.parseSelector)
            let bytes = entry.value("bytes") { text -> Result<UInt64, ConfigValues.Message> in
                guard let size = ConfigValues.byteSize(text), size > 0 else {
                    return .failure(.init("'\(text)' is not a size; write bytes or use KiB, MiB, GiB, TiB (as 50GiB)"))
                }
                return .success(UInt64(size))
            }
            let period = entry.value("period") { text -> Result<UsagePeriod, ConfigValues.Message> in
                UsagePeriod(rawValue: text).map { .success($0) } ?? .failure(.init("'\(text)' is not day or month"))
            }
            entry.finish()
            guard case .mapping = item else {
                problems.report(item, entry.path, "expected a quota: a mapping with who, bytes and period")
                continue
            }
            for (key, value) in [("who", who != nil), ("bytes", bytes != nil), ("period", period != nil)] where !value && entry.node(key) == nil {
                problems.report(item, entry.path, "missing key '\(key)'")
            }
            if let who, who.contains(.anonymous) {
                problems.report(entry.node("who"), entry.keyPath("who"), "anonymous sessions have no user to count: quotas are per user")
            }
            guard let who, let bytes, let period else { continue }
            result.append(Quota(who: who, bytes: bytes, period: period, line: item.mark?.line))
        }
        return result
    }
}
