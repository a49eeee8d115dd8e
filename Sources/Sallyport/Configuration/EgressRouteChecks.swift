import FoundationEssentials
import NIOCore
import NIOPosix
import SOCKSProtocol
import SallyportPolicy

/// What `check-config`, start and reload say of the egress routes: addresses and interfaces can
/// come and go (a VPN, a second address added later), so they are warnings, not errors.
extension ServerConfiguration {
    func egressRouteWarnings() -> [String] {
        var routes: [(String, EgressRoute)] = policy.rules.enumerated().compactMap { index, rule in
            rule.route.map { ("rule \(rule.name ?? "\(index + 1)")", $0) }
        }
        if let route = policy.defaultRoute { routes.append(("egress", route)) }
        guard !routes.isEmpty else { return [] }
        let local = Set(((try? System.enumerateDevices()) ?? []).compactMap { $0.address.flatMap(IPAddress.init)?.unmapped })
        let interfaces = Set(((try? System.enumerateDevices()) ?? []).map(\.name))
        var warnings: [String] = []
        for (owner, route) in routes {
            if let address = route.address, !address.isLoopback, !local.contains(address) {
                warnings.append("\(owner): egress address \(address.socketAddress(port: 0).ipAddress ?? "?") is not an address of this host now; its connections fail (reply 0x01) until it is")
            }
            if let interface = route.interface {
                if !interfaces.contains(interface) {
                    warnings.append("\(owner): interface \(interface) does not exist now; its connections fail (reply 0x01) until it does")
                }
                if !Self.hasNetRawCapability {
                    warnings.append("\(owner): binding to interface \(interface) needs CAP_NET_RAW, which this process lacks (add AmbientCapabilities=CAP_NET_RAW to the unit)")
                }
            }
        }
        return warnings
    }

    /// CAP_NET_RAW (bit 13) in this process's effective capabilities.
    static var hasNetRawCapability: Bool {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
            let mask = UInt64(line.dropFirst("CapEff:".count).filter { !$0.isWhitespace }, radix: 16)
        else { return false }
        return mask & (1 << 13) != 0
    }
}
