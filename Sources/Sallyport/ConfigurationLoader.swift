import NIOCore
import SOCKSProtocol
import SallyportPolicy
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// A configuration that cannot be used, with every problem found in it.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    /// One problem: where it is and what to do about it.
    public struct Problem: Sendable, Hashable, CustomStringConvertible {
        public var file: String
        public var line: Int?
        public var column: Int?
        /// The key path, as `timeouts.idle` or `listen[1]`; empty for the whole file.
        public var keyPath: String
        public var message: String

        public var description: String {
            var location = file
            if let line {
                location += ":\(line)"
                if let column { location += ":\(column)" }
            }
            return keyPath.isEmpty ? "\(location): \(message)" : "\(location): \(keyPath): \(message)"
        }
    }

    public var problems: [Problem]

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

/// Reads the YAML configuration file, checking every key and value.
public enum ConfigurationLoader {
    /// Reads and checks the file at `path`.
    public static func load(path: String) throws(ConfigurationError) -> ServerConfiguration {
        let text: String
        do {
            text = try readFile(path)
        } catch {
            throw ConfigurationError(problems: [
                .init(file: path, keyPath: "", message: "cannot read the file: \(error); check the path and its permissions")
            ])
        }
        return try parse(yaml: text, file: path)
    }

    /// Checks the configuration in `yaml`; `file` names it in errors.
    public static func parse(yaml: String, file: String) throws(ConfigurationError) -> ServerConfiguration {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigurationError(problems: [yamlProblem(error, file: file)])
        } catch {
            throw ConfigurationError(problems: [.init(file: file, keyPath: "", message: "\(error)")])
        }
        var reader = NodeReader(file: file)
        let configuration = reader.readConfiguration(root)
        if !reader.problems.isEmpty { throw ConfigurationError(problems: reader.problems) }
        return configuration
    }

    /// Parses `HOST:PORT` (`[V6]:PORT` for IPv6) into a listener; `source` names where it came from.
    public static func parseListenAddress(_ text: String) -> Result<(host: String, port: Int), ListenAddressError> {
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return .failure(ListenAddressError(text: text, reason: "an IPv6 address goes in brackets: [::1]:1080"))
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                return .failure(ListenAddressError(text: text, reason: "expected HOST:PORT, as 127.0.0.1:1080"))
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                return .failure(ListenAddressError(text: text, reason: "an IPv6 address goes in brackets: [::1]:1080"))
            }
        }
        if host == "localhost" { host = "127.0.0.1" }
        guard let port = Int(portText), (0...65535).contains(port) else {
            return .failure(ListenAddressError(text: text, reason: "the port must be a number from 0 to 65535 (0 picks a free port)"))
        }
        guard (try? SocketAddress(ipAddress: String(host), port: port)) != nil else {
            return .failure(ListenAddressError(text: text, reason: "'\(host)' is not an IP address; use one such as 127.0.0.1 or [::1]"))
        }
        return .success((String(host), port))
    }

    /// Why a listen address was refused.
    public struct ListenAddressError: Error, Sendable, CustomStringConvertible {
        public var text: String
        public var reason: String
        public var description: String { "'\(text)': \(reason)" }
    }

    private static func yamlProblem(_ error: YamlError, file: String) -> ConfigurationError.Problem {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
            .composer(_, let problem, let mark, _):
            return .init(file: file, line: mark.line, column: mark.column, keyPath: "", message: "not valid YAML: \(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return .init(
                file: file, line: context.mark.line, column: context.mark.column, keyPath: "",
                message: "duplicated keys \(duplicates.joined(separator: ", ")); give each key once")
        default:
            return .init(file: file, keyPath: "", message: "not valid YAML: \(error)")
        }
    }

    private static func readFile(_ path: String) throws -> String {
        guard let file = fopen(path, "r") else { throw SystemError(errno: errno) }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count > 0 { bytes.append(contentsOf: chunk[0..<count]) }
            if count < chunk.count {
                if ferror(file) != 0 { throw SystemError(errno: errno) }
                break
            }
            guard bytes.count <= 16 * 1024 * 1024 else { throw SystemError(message: "larger than 16 MiB") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// An error from the C library, with its text.
struct SystemError: Error, CustomStringConvertible {
    var description: String

    init(errno code: Int32) { description = String(cString: strerror(code)) }
    init(message: String) { description = message }
}

/// Walks the YAML tree, collecting every problem rather than stopping at the first.
struct NodeReader {
    let file: String
    var problems: [ConfigurationError.Problem] = []

    mutating func report(_ node: Node?, _ path: String, _ message: String) {
        problems.append(.init(file: file, line: node?.mark?.line, column: node?.mark?.column, keyPath: path, message: message))
    }

    mutating func readConfiguration(_ root: Node?) -> ServerConfiguration {
        var configuration = ServerConfiguration()
        guard let root, !isNull(root) else { return configuration }
        let keys = [
            "listen", "methods", "allow_unauthenticated_remote", "auth", "clients", "rules", "default_action", "timeouts", "limits",
            "relay", "log", "udp",
        ]
        guard let entries = mapping(root, "", known: keys) else { return configuration }
        var defaultMethods: [AuthenticationMethod] = [.none]
        if let node = entries["methods"] { defaultMethods = methods(node, "methods") ?? defaultMethods }
        if let node = entries["listen"] {
            configuration.listeners = listeners(node, "listen", defaultMethods: defaultMethods)
        } else {
            configuration.listeners = configuration.listeners.map {
                ListenerConfiguration(host: $0.host, port: $0.port, methods: defaultMethods)
            }
        }
        if let node = entries["allow_unauthenticated_remote"], let value = bool(node, "allow_unauthenticated_remote") {
            configuration.allowUnauthenticatedRemote = value
        }
        if !configuration.allowUnauthenticatedRemote, case .sequence(let items)? = entries["listen"] {
            for (index, listener) in configuration.listeners.enumerated()
            where index < items.count && listener.methods.contains(.none) && !listener.isLoopback {
                report(
                    items[index], "listen[\(index)]",
                    "\(listener.addressDescription) is not a loopback address but offers method 'none', which would make an open proxy; offer [username] there, or set allow_unauthenticated_remote: true if that is really meant")
            }
        }
        if let node = entries["auth"], let auth = mapping(node, "auth", known: ["pam", "throttle", "cache_ttl"]) {
            if let value = auth["cache_ttl"], let time = duration(value, "auth.cache_ttl", allowZero: true) {
                configuration.auth.cacheTTL = time
            }
            if let node = auth["pam"], let pam = mapping(node, "auth.pam", known: ["service", "threads", "max_pending"]) {
                if let value = pam["service"], let service = scalarString(value, "auth.pam.service") {
                    if service.isEmpty || service.contains("/") {
                        report(value, "auth.pam.service", "'\(service)' is not a PAM service name (a file name in /etc/pam.d)")
                    } else {
                        configuration.auth.pam.service = service
                    }
                }
                if let value = pam["threads"], let threads = integer(value, "auth.pam.threads", range: 1...256) {
                    configuration.auth.pam.threads = threads
                }
                if let value = pam["max_pending"], let bound = integer(value, "auth.pam.max_pending", range: 1...100_000) {
                    configuration.auth.pam.maxPending = bound
                }
            }
            if let node = auth["throttle"],
                let throttle = mapping(node, "auth.throttle", known: ["max_failures", "window", "backoff", "max_backoff"])
            {
                if let value = throttle["max_failures"], let count = integer(value, "auth.throttle.max_failures", range: 0...1_000_000) {
                    configuration.auth.throttle.maxFailures = count
                }
                if let value = throttle["window"], let time = duration(value, "auth.throttle.window", allowZero: false) {
                    configuration.auth.throttle.window = time
                }
                if let value = throttle["backoff"], let time = duration(value, "auth.throttle.backoff", allowZero: false) {
                    configuration.auth.throttle.backoff = time
                }
                if let value = throttle["max_backoff"], let time = duration(value, "auth.throttle.max_backoff", allowZero: false) {
                    configuration.auth.throttle.maxBackoff = time
                }
            }
        }
        if let node = entries["timeouts"], let timeouts = mapping(node, "timeouts", known: ["negotiation", "connect", "dns", "idle", "shutdown_grace"]) {
            if let value = timeouts["dns"], let time = duration(value, "timeouts.dns", allowZero: false) {
                configuration.timeouts.dns = time
            }
            if let value = timeouts["negotiation"], let time = duration(value, "timeouts.negotiation", allowZero: false) {
                configuration.timeouts.negotiation = time
            }
            if let value = timeouts["connect"], let time = duration(value, "timeouts.connect", allowZero: false) {
                configuration.timeouts.connect = time
            }
            if let value = timeouts["idle"], let time = duration(value, "timeouts.idle", allowZero: true) {
                configuration.timeouts.idle = time == .zero ? nil : time
            }
            if let value = timeouts["shutdown_grace"], let time = duration(value, "timeouts.shutdown_grace", allowZero: true) {
                configuration.timeouts.shutdownGrace = time
            }
        }
        // A file says who may reach what; with no rules it allows nothing.
        configuration.policy = Policy(rules: [])
        if let node = entries["rules"] { configuration.policy.rules = rules(node, "rules") }
        if let node = entries["clients"] { configuration.policy.clientRules = clientRules(node, "clients") }
        if let node = entries["default_action"], let action = action(node, "default_action") {
            configuration.policy.defaultAction = action
        }
        if configuration.policy.rules.isEmpty && configuration.policy.defaultAction == .deny {
            configuration.warnings.append(
                "\(file): no rules, and default_action is deny: every request will be refused; add rules (see conf/sallyport.yaml)")
        }
        if let node = entries["limits"],
            let limits = mapping(node, "limits", known: ["early_data", "max_sessions", "sessions_per_user", "sessions_per_client", "bandwidth_per_user"])
        {
            if let value = limits["early_data"], let size = byteSize(value, "limits.early_data", range: 0...(16 << 20)) {
                configuration.limits.earlyDataBytes = size
            }
            if let value = limits["max_sessions"], let count = integer(value, "limits.max_sessions", range: 0...10_000_000) {
                configuration.limits.maxSessions = count
            }
            if let value = limits["sessions_per_user"], let count = integer(value, "limits.sessions_per_user", range: 0...10_000_000) {
                configuration.limits.sessionsPerUser = count
            }
            if let value = limits["sessions_per_client"], let count = integer(value, "limits.sessions_per_client", range: 0...10_000_000) {
                configuration.limits.sessionsPerClient = count
            }
            if let value = limits["bandwidth_per_user"], let rate = byteSize(value, "limits.bandwidth_per_user", range: 0...(1 << 40)) {
                if rate > 0 && rate < 1024 {
                    report(value, "limits.bandwidth_per_user", "'\(rate)' bytes/s is too small to shape smoothly; use 0 (no limit) or at least 1KiB")
                } else {
                    configuration.limits.bandwidthPerUser = rate
                }
            }
        }
        if let node = entries["udp"], let udp = mapping(node, "udp", known: ["enabled", "advertise", "port_range", "idle", "max_destinations"]) {
            if let value = udp["enabled"], let enabled = bool(value, "udp.enabled") { configuration.udp.enabled = enabled }
            if let value = udp["advertise"], let text = scalarString(value, "udp.advertise") {
                if (try? SocketAddress(ipAddress: text, port: 0)) != nil {
                    configuration.udp.advertise = text
                } else {
                    report(value, "udp.advertise", "'\(text)' is not an IP address; give the public address clients reach this host at")
                }
            }
            if let value = udp["port_range"], let text = scalarString(value, "udp.port_range") {
                switch Self.portRange(text) {
                case .success(let range): configuration.udp.ports = Int(range.lowerBound)...Int(range.upperBound)
                case .failure(let message): report(value, "udp.port_range", message.text)
                }
            }
            if let value = udp["idle"], let time = duration(value, "udp.idle", allowZero: true) {
                configuration.udp.idle = time == .zero ? nil : time
            }
            if let value = udp["max_destinations"], let count = integer(value, "udp.max_destinations", range: 1...65_536) {
                configuration.udp.maxDestinations = count
            }
        }
        if let node = entries["relay"], let relay = mapping(node, "relay", known: ["receive_buffer"]) {
            if let value = relay["receive_buffer"], let size = byteSize(value, "relay.receive_buffer", range: 4096...(16 << 20)) {
                configuration.relay.receiveBufferBytes = size
            }
        }
        if let node = entries["log"], let log = mapping(node, "log", known: ["level", "format"]) {
            if let value = log["level"], let level = choice(value, "log.level", LogConfiguration.Level.self) {
                configuration.log.level = level
            }
            if let value = log["format"], let format = choice(value, "log.format", LogConfiguration.Format.self) {
                configuration.log.format = format
            }
        }
        return configuration
    }

    mutating func listeners(_ node: Node, _ path: String, defaultMethods: [AuthenticationMethod]) -> [ListenerConfiguration] {
        guard case .sequence(let sequence) = node, !sequence.isEmpty else {
            report(node, path, "expected a list of addresses, as [127.0.0.1:1080, \"[::1]:1080\"]")
            return []
        }
        var result: [ListenerConfiguration] = []
        for (index, item) in sequence.enumerated() {
            let itemPath = "\(path)[\(index)]"
            var addressNode = item
            var addressPath = itemPath
            var methods = defaultMethods
            if case .mapping = item {
                guard let entries = mapping(item, itemPath, known: ["address", "methods"]) else { continue }
                guard let address = entries["address"] else {
                    report(item, itemPath, "missing key 'address' (HOST:PORT)")
                    continue
                }
                addressNode = address
                addressPath = itemPath + ".address"
                if let node = entries["methods"] { methods = self.methods(node, itemPath + ".methods") ?? methods }
            }
            guard let text = scalarString(addressNode, addressPath) else { continue }
            switch ConfigurationLoader.parseListenAddress(text) {
            case .success(let address):
                result.append(ListenerConfiguration(host: address.host, port: address.port, methods: methods))
            case .failure(let error):
                report(addressNode, addressPath, error.description)
            }
        }
        return result
    }

    mutating func rules(_ node: Node, _ path: String) -> [EgressRule] {
        guard case .sequence(let sequence) = node else {
            report(node, path, "expected a list of rules, each a mapping with at least 'action'")
            return []
        }
        var result: [EgressRule] = []
        var names: Set<String> = []
        for (index, item) in sequence.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let entries = mapping(item, itemPath, known: ["name", "action", "who", "to", "ports", "commands"]) else { continue }
            guard let actionNode = entries["action"] else {
                report(item, itemPath, "missing key 'action' (allow or deny)")
                continue
            }
            guard let action = action(actionNode, itemPath + ".action") else { continue }
            var rule = EgressRule(action: action, line: item.mark?.line)
            if let node = entries["name"], let name = scalarString(node, itemPath + ".name") {
                if !names.insert(name).inserted { report(node, itemPath + ".name", "the name '\(name)' is used by an earlier rule") }
                rule.name = name
            }
            if let node = entries["who"] { rule.who = list(node, itemPath + ".who", Self.selector) }
            if let node = entries["to"] { rule.to = list(node, itemPath + ".to", Self.destination) }
            if let node = entries["ports"] { rule.ports = list(node, itemPath + ".ports", Self.portRange) }
            if let node = entries["commands"] {
                let commands = list(node, itemPath + ".commands") { text -> Result<SOCKSCommand, Message> in
                    switch text {
                    case "connect": return .success(.connect)
                    case "udp": return .success(.udpAssociate)
                    default: return .failure(Message("unknown command '\(text)'; expected connect or udp"))
                    }
                }
                rule.commands = commands.map(Set.init)
            }
            result.append(rule)
        }
        return result
    }

    mutating func clientRules(_ node: Node, _ path: String) -> [ClientRule] {
        guard case .sequence(let sequence) = node else {
            report(node, path, "expected a list of {action, from} entries")
            return []
        }
        var result: [ClientRule] = []
        for (index, item) in sequence.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let entries = mapping(item, itemPath, known: ["action", "from"]) else { continue }
            guard let actionNode = entries["action"], let fromNode = entries["from"] else {
                report(item, itemPath, "a client rule needs 'action' (allow or deny) and 'from' (a list of address blocks)")
                continue
            }
            guard let action = action(actionNode, itemPath + ".action") else { continue }
            let blocks = list(fromNode, itemPath + ".from") { text -> Result<CIDR, Message> in
                guard let block = CIDR(text) else {
                    return .failure(Message("'\(text)' is not an address block such as 10.0.0.0/8 or 2001:db8::/32"))
                }
                return .success(block)
            }
            if let blocks { result.append(ClientRule(action: action, from: blocks, line: item.mark?.line)) }
        }
        return result
    }

    mutating func action(_ node: Node, _ path: String) -> PolicyAction? {
        guard let text = scalarString(node, path) else { return nil }
        guard let action = PolicyAction(rawValue: text) else {
            report(node, path, "'\(text)' is not allow or deny")
            return nil
        }
        return action
    }

    /// A list of scalars (a single scalar counts as a list of one), each turned into a value.
    mutating func list<Value>(_ node: Node, _ path: String, _ convert: (String) -> Result<Value, Message>) -> [Value]? {
        let items: [Node]
        switch node {
        case .sequence(let sequence): items = Array(sequence)
        case .scalar: items = [node]
        default:
            report(node, path, "expected a list")
            return nil
        }
        guard !items.isEmpty else {
            report(node, path, "an empty list matches nothing; leave the key out to match everything")
            return nil
        }
        var values: [Value] = []
        for (index, item) in items.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let text = scalarString(item, itemPath) else { continue }
            switch convert(text) {
            case .success(let value): values.append(value)
            case .failure(let message): report(item, itemPath, message.text)
            }
        }
        return values.count == items.count ? values : nil
    }

    /// A problem found in one value.
    struct Message: Error {
        var text: String
        init(_ text: String) { self.text = text }
    }

    static func selector(_ text: String) -> Result<EgressRule.Selector, Message> {
        switch text {
        case "*", "any", "anyone": return .success(.anyone)
        case "authenticated": return .success(.authenticated)
        case "anonymous": return .success(.anonymous)
        default:
            if text.hasPrefix("user:"), text.count > 5 { return .success(.user(String(text.dropFirst(5)))) }
            if text.hasPrefix("group:"), text.count > 6 { return .success(.group(String(text.dropFirst(6)))) }
            return .failure(Message("'\(text)' is not a selector; write user:NAME, group:NAME, authenticated, anonymous or *"))
        }
    }

    static func destination(_ text: String) -> Result<EgressRule.Destination, Message> {
        if text == "*" { return .success(.any) }
        if let block = CIDR(text) { return .success(.block(block)) }
        let lowered = text.lowercased()
        let name = lowered.hasPrefix(".") ? String(lowered.dropFirst()) : lowered
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        let valid = !name.isEmpty && name.utf8.count <= 253 && !name.contains("/")
            && labels.allSatisfy { !$0.isEmpty && $0.count <= 63 && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" } }
        guard valid else {
            return .failure(Message("'\(text)' is not a destination; write *, an address block (10.0.0.0/8), a host name (api.example.com) or a domain (.example.com)"))
        }
        return .success(lowered.hasPrefix(".") ? .domainSuffix(name) : .host(name))
    }

    static func portRange(_ text: String) -> Result<ClosedRange<UInt16>, Message> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        let bounds = parts.map { UInt16($0.trimmingSpaces) }
        if parts.count == 1, let port = bounds[0], port > 0 { return .success(port...port) }
        if parts.count == 2, let low = bounds[0], let high = bounds[1], low > 0, low <= high { return .success(low...high) }
        return .failure(Message("'\(text)' is not a port (1-65535) or a range such as 8000-8100"))
    }

    mutating func methods(_ node: Node, _ path: String) -> [AuthenticationMethod]? {
        guard case .sequence(let sequence) = node, !sequence.isEmpty else {
            report(node, path, "expected a non-empty list of methods, as [none] or [username, none]")
            return nil
        }
        var result: [AuthenticationMethod] = []
        for (index, item) in sequence.enumerated() {
            guard let name = scalarString(item, "\(path)[\(index)]") else { continue }
            let method: AuthenticationMethod
            switch name {
            case "none": method = .none
            case "username": method = .usernamePassword
            default:
                report(item, "\(path)[\(index)]", "unknown method '\(name)'; known methods: none, username")
                continue
            }
            if result.contains(method) {
                report(item, "\(path)[\(index)]", "method '\(name)' is listed twice")
            }
            result.append(method)
        }
        return result
    }

    /// The entries of a mapping; unknown keys are reported with the known ones.
    mutating func mapping(_ node: Node, _ path: String, known: [String]) -> [String: Node]? {
        guard case .mapping(let mapping) = node else {
            report(node, path, "expected a mapping of keys (\(known.joined(separator: ", ")))")
            return nil
        }
        var result: [String: Node] = [:]
        for (key, value) in mapping {
            let name = key.scalar?.string ?? "\(key)"
            let keyPath = path.isEmpty ? name : "\(path).\(name)"
            guard known.contains(name) else {
                report(key, keyPath, "unknown key; known keys here: \(known.joined(separator: ", "))")
                continue
            }
            result[name] = value
        }
        return result
    }

    mutating func scalarString(_ node: Node, _ path: String) -> String? {
        guard case .scalar(let scalar) = node, !isNull(node) else {
            report(node, path, "expected a single value")
            return nil
        }
        return scalar.string
    }

    mutating func choice<Value: RawRepresentable & CaseIterable>(_ node: Node, _ path: String, _ type: Value.Type) -> Value?
    where Value.RawValue == String {
        guard let text = scalarString(node, path) else { return nil }
        guard let value = Value(rawValue: text) else {
            report(node, path, "unknown value '\(text)'; expected one of: \(Value.allCases.map(\.rawValue).joined(separator: ", "))")
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node, _ path: String) -> Bool? {
        guard let text = scalarString(node, path) else { return nil }
        switch text {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            report(node, path, "'\(text)' is not true or false")
            return nil
        }
    }

    mutating func integer(_ node: Node, _ path: String, range: ClosedRange<Int>) -> Int? {
        guard let text = scalarString(node, path) else { return nil }
        guard let value = Int(text), range.contains(value) else {
            report(node, path, "'\(text)' is not a whole number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return value
    }

    /// A duration: a number of seconds, or a number with `ms`, `s`, `m` or `h`.
    mutating func duration(_ node: Node, _ path: String, allowZero: Bool) -> TimeAmount? {
        guard let text = scalarString(node, path) else { return nil }
        let units: [(String, Int64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)]
        var number = Substring(text)
        var scale: Int64 = 1_000_000_000
        for (suffix, nanoseconds) in units where text.hasSuffix(suffix) {
            number = text.dropLast(suffix.count)
            scale = nanoseconds
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0, value * Double(scale) < 1e18,
            allowZero || value > 0
        else {
            let zero = allowZero ? " (0 turns it off)" : ""
            report(node, path, "'\(text)' is not a duration; write a number of seconds or one with a unit: 500ms, 10s, 5m, 1h\(zero)")
            return nil
        }
        return .nanoseconds(Int64(value * Double(scale)))
    }

    /// A size in bytes: a whole number, or one with `KiB`, `MiB` or `GiB`.
    mutating func byteSize(_ node: Node, _ path: String, range: ClosedRange<Int>) -> Int? {
        guard let text = scalarString(node, path) else { return nil }
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        var number = Substring(text)
        var scale = 1
        for (suffix, bytes) in units where text.hasSuffix(suffix) {
            number = text.dropLast(suffix.count)
            scale = bytes
            break
        }
        guard let value = Int(number.trimmingSpaces), value.multipliedReportingOverflow(by: scale).overflow == false,
            range.contains(value * scale)
        else {
            report(node, path, "'\(text)' is not a size from \(range.lowerBound) to \(range.upperBound) bytes; write bytes or use KiB, MiB")
            return nil
        }
        return value * scale
    }

    func isNull(_ node: Node) -> Bool {
        if case .scalar(let scalar) = node, scalar.tag.description == "tag:yaml.org,2002:null" { return true }
        return node.null != nil
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
