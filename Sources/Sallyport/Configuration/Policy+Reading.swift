import SOCKSProtocol
import SallyportPolicy

/// The policy's keys of the file: `rules`, `clients`, `default_action`.
extension Policy {
    /// A file without `rules` keeps the rule of the embedded default (every public destination,
    /// for everyone, the special-address guard on), whatever else it holds; `rules: []` allows
    /// nothing.
    mutating func read(_ section: inout ConfigSection) {
        if let node = section.node("rules") { rules = Self.rules(node, section.keyPath("rules"), section.problems) }
        if let node = section.node("clients") { clientRules = Self.clientRules(node, section.keyPath("clients"), section.problems) }
        if let action = section.value("default_action", EgressRule.parseAction) { defaultAction = action }
        if let route = EgressRoute.read(&section) { defaultRoute = route }
    }

    static func rules(_ node: YAMLNode, _ path: String, _ problems: ConfigProblems) -> [EgressRule] {
        guard case .sequence(let sequence, _) = node else {
            problems.report(node, path, "expected a list of rules, each a mapping with at least 'action'")
            return []
        }
        var result: [EgressRule] = []
        var names: Set<String> = []
        for (index, item) in sequence.enumerated() {
            var entry = ConfigSection(item, path: "\(path)[\(index)]", problems: problems)
            guard case .mapping = item else {
                problems.report(item, entry.path, "expected a rule: a mapping with 'action' and optionally name, who, to, ports, commands")
                continue
            }
            let name = entry.string("name")
            let action = entry.value("action", EgressRule.parseAction)
            let who = entry.list("who", EgressRule.parseSelector)
            let to = entry.list("to", EgressRule.parseDestination)
            let ports = entry.list("ports", EgressRule.parsePorts)
            let commands = entry.list("commands", EgressRule.parseCommand)
            var route = EgressRoute.read(&entry)
            if var via = entry.value("via", UpstreamProxy.parse) {
                UpstreamProxy.readTLS(&via, &entry)
                route = route ?? EgressRoute()
                route?.via = via
                if action == .deny { problems.report(entry.node("via"), entry.keyPath("via"), "a deny rule sends nothing anywhere: via belongs on allow rules") }
                if let commands, !commands.contains(.connect) {
                    problems.report(entry.node("via"), entry.keyPath("via"), "via carries CONNECT sessions only, and this rule's commands leave connect out: drop via, or add connect to commands")
                }
            }
            let listFile = entry.string("to_file")
            var list: DestinationList?
            if let listFile {
                if to != nil { problems.report(entry.node("to_file"), entry.keyPath("to_file"), "a rule takes either to or to_file, not both") }
                list = Self.readList(listFile, node: entry.node("to_file"), path: entry.keyPath("to_file"), problems: problems)
            }
            entry.finish()
            if entry.node("action") == nil { problems.report(item, entry.path, "missing key 'action' (allow or deny)") }
            guard let action else { continue }
            if let name, !names.insert(name).inserted {
                problems.report(item, entry.keyPath("name"), "the name '\(name)' is used by an earlier rule")
            }
            if entry.node("egress") != nil, action == .deny {
                problems.report(item, entry.keyPath("egress"), "a deny rule sends nothing anywhere: egress belongs on allow rules")
            }
            var rule = EgressRule(name: name, action: action, who: who, to: to, ports: ports, commands: commands.map(Set.init), route: route, line: item.mark?.line)
            if let list {
                rule.list = list
                rule.listFile = listFile
            }
            result.append(rule)
        }
        return result
    }

    /// A `to_file`, relative to the configuration file's directory unless absolute.
    static func readList(_ file: String, node: YAMLNode?, path: String, problems: ConfigProblems) -> DestinationList? {
        let resolved = problems.resolve(file)
        switch DestinationFile.read(resolved) {
        case .success(let list):
            return list
        case .failure(let failure):
            if let reason = failure.reason { problems.report(node, path, reason) }
            for (line, message) in failure.lines {
                problems.report(node, path, "\(resolved):\(line): \(message)")
            }
            return nil
        }
    }

    static func clientRules(_ node: YAMLNode, _ path: String, _ problems: ConfigProblems) -> [ClientRule] {
        guard case .sequence(let sequence, _) = node else {
            problems.report(node, path, "expected a list of {action, from} entries")
            return []
        }
        var result: [ClientRule] = []
        for (index, item) in sequence.enumerated() {
            var entry = ConfigSection(item, path: "\(path)[\(index)]", problems: problems)
            let action = entry.value("action", EgressRule.parseAction)
            let blocks = entry.list("from") { text -> Result<CIDR, ConfigValues.Message> in
                CIDR(text).map { .success($0) } ?? .failure(.init("'\(text)' is not an address block such as 10.0.0.0/8 or 2001:db8::/32"))
            }
            entry.finish()
            guard case .mapping = item, entry.node("action") != nil, entry.node("from") != nil else {
                problems.report(item, entry.path, "a client rule needs 'action' (allow or deny) and 'from' (a list of address blocks)")
                continue
            }
            if let action, let blocks { result.append(ClientRule(action: action, from: blocks, line: item.mark?.line)) }
        }
        return result
    }
}

/// The values a rule is written with.
extension EgressRule {
    static func parseAction(_ text: String) -> Result<PolicyAction, ConfigValues.Message> {
        PolicyAction(rawValue: text).map { .success($0) } ?? .failure(.init("'\(text)' is not allow or deny"))
    }

    static func parseCommand(_ text: String) -> Result<SOCKSCommand, ConfigValues.Message> {
        switch text {
        case "connect": return .success(.connect)
        case "udp": return .success(.udpAssociate)
        case "bind": return .success(.bind)
        default: return .failure(.init("unknown command '\(text)'; expected connect, udp or bind"))
        }
    }

    static func parseSelector(_ text: String) -> Result<Selector, ConfigValues.Message> {
        switch text {
        case "*", "any", "anyone": return .success(.anyone)
        case "authenticated": return .success(.authenticated)
        case "anonymous": return .success(.anonymous)
        default:
            if text.hasPrefix("user:"), text.count > 5 { return .success(.user(String(text.dropFirst(5)))) }
            if text.hasPrefix("group:"), text.count > 6 { return .success(.group(String(text.dropFirst(6)))) }
            return .failure(.init("'\(text)' is not a selector; write user:NAME, group:NAME, authenticated, anonymous or *"))
        }
    }

    static func parseDestination(_ text: String) -> Result<Destination, ConfigValues.Message> {
        if text == "*" { return .success(.any) }
        if let block = CIDR(text) { return .success(.block(block)) }
        let isDomain = text.hasPrefix(".")
        let name = isDomain ? text.utf8.dropFirst() : text.utf8[...]
        guard let normalized = DestinationName.normalized(name) else {
            if text.utf8.contains(where: { $0 >= 0x80 }) {
                return .failure(.init("'\(text)' is not ASCII; write an international name in its xn-- form (as a browser shows it in the address bar, e.g. xn--bcher-kva.example)"))
            }
            return .failure(.init("'\(text)' is not a destination; write *, an address block (10.0.0.0/8), a host name (api.example.com) or a domain (.example.com)"))
        }
        return .success(isDomain ? .domainSuffix(normalized) : .host(normalized))
    }

    static func parsePorts(_ text: String) -> Result<ClosedRange<UInt16>, ConfigValues.Message> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        let bounds = parts.map { UInt16($0.trimmingSpaces) }
        if parts.count == 1, let port = bounds[0], port > 0 { return .success(port...port) }
        if parts.count == 2, let low = bounds[0], let high = bounds[1], low > 0, low <= high { return .success(low...high) }
        return .failure(.init("'\(text)' is not a port (1-65535) or a range such as 8000-8100"))
    }
}

extension EgressRoute {
    /// `egress: {address: IP, interface: NAME}` of a rule or of the whole file; nil when absent.
    static func read(_ section: inout ConfigSection) -> EgressRoute? {
        var route: EgressRoute?
        let node = section.node("egress")
        section.section("egress") { egress in
            var read = EgressRoute()
            read.address = egress.value("address") { text in
                IPAddress(text).map { .success($0) } ?? .failure(.init("'\(text)' is not an IP address (the source address outbound connections use)"))
            }
            read.interface = egress.value("interface") { name in
                name.utf8.count < 16 && !name.isEmpty && !name.contains("/") && !name.contains(" ")
                    ? .success(name) : .failure(.init("'\(name)' is not an interface name (1 to 15 characters, as eth1 or wg0)"))
            }
            if read.address == nil && read.interface == nil, egress.node("address") == nil, egress.node("interface") == nil {
                egress.problems.report(node, egress.path, "egress needs address (a source IP) or interface (a network interface), or both")
            }
            route = read
        }
        return route
    }
}

extension UpstreamProxy {
    /// `socks5://[user:password@]host:port` or `http://[user:password@]host:port`; user and
    /// password may be percent-encoded.
    static func parse(_ text: String) -> Result<UpstreamProxy, ConfigValues.Message> {
        let usage = "write socks5://[user:password@]host:port, socks5+tls://[user:password@]host:port or http://[user:password@]host:port"
        let kind: Kind
        var rest: Substring
        var tls: UpstreamTLS?
        if text.hasPrefix("socks5://") || text.hasPrefix("socks5h://") || text.hasPrefix("socks5+tls://") {
            kind = .socks5
            if text.hasPrefix("socks5+tls://") { tls = UpstreamTLS() }
            rest = text[text.index(after: text.firstIndex(of: "/")!)...].dropFirst()
        } else if text.hasPrefix("http://") {
            kind = .http
            rest = text.dropFirst("http://".count)
        } else {
            return .failure(.init("'\(redacted(text))' is not a proxy URL; \(usage)"))
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let parts = userinfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let user = percentDecoded(parts[0]), !user.isEmpty, !user.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: ":") }),
                let secret = parts.count == 2 ? percentDecoded(parts[1]) : "", !secret.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F })
            else {
                return .failure(.init("the user and password of '\(kind.rawValue)://...@\(rest)' are not valid; percent-encode : @ / and %"))
            }
            username = user
            password = secret
        }
        let host: String
        let portText: Substring
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            portText = rest[rest.index(after: close)...].drop { $0 == ":" }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            portText = rest[rest.index(after: colon)...]
        } else {
            return .failure(.init("'\(kind.rawValue)://\(rest)' names no port; \(usage)"))
        }
        guard IPAddress(host) != nil || DestinationName.normalized(host.utf8) != nil, let port = UInt16(portText), port > 0 else {
            return .failure(.init("'\(kind.rawValue)://\(rest)' is not host:port with a port from 1 to 65535; \(usage)"))
        }
        var proxy = UpstreamProxy(kind: kind, host: host, port: port, username: username, password: password)
        proxy.tls = tls
        return .success(proxy)
    }

    /// A rule's `tls_ca`, `tls_server_name`, `tls_certificate` and `tls_key`, for a `socks5+tls` via.
    static func readTLS(_ via: inout UpstreamProxy, _ entry: inout ConfigSection) {
        let problems = entry.problems
        let ca = entry.string("tls_ca").map(problems.resolve)
        let serverName = entry.value("tls_server_name") { name -> Result<String, ConfigValues.Message> in
            IPAddress(name) != nil || DestinationName.normalized(name.utf8) != nil ? .success(name) : .failure(.init("'\(name)' is not a host name or an IP address"))
        }
        let certificate = entry.string("tls_certificate").map(problems.resolve)
        let key = entry.string("tls_key").map(problems.resolve)
        let given = [ca, serverName, certificate, key].contains { $0 != nil }
        guard via.tls != nil else {
            if given { problems.report(entry.node("via"), entry.keyPath("via"), "tls_ca, tls_server_name, tls_certificate and tls_key are for a socks5+tls:// via") }
            return
        }
        if (certificate == nil) != (key == nil) {
            problems.report(entry.node("via"), entry.keyPath("via"), "a client certificate needs both tls_certificate and tls_key")
        }
        via.tls = UpstreamTLS(ca: ca, serverName: serverName, certificate: certificate, key: key)
    }

    /// The URL as a message may show it: whatever stands before the `@` replaced, so that a
    /// mistyped URL's password reaches no log, `systemctl status` or admin page.
    static func redacted(_ text: String) -> String {
        guard let at = text.lastIndex(of: "@") else { return text }
        let scheme = text.firstIndex(of: ":").flatMap { colon in text[colon...].hasPrefix("://") ? text.index(colon, offsetBy: 3) : nil }
        let start = scheme.map { $0 < at ? $0 : text.startIndex } ?? text.startIndex
        return String(text[..<start]) + "***" + String(text[at...])
    }

    private static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next(), let low = iterator.next(), let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            else { return nil }
            bytes.append(value)
        }
        return String(validating: bytes, as: UTF8.self)
    }
}
