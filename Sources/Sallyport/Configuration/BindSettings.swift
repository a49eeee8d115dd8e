import SOCKSProtocol
import SallyportPolicy

/// BIND: where its listening sockets are and what the first reply names.
public struct BindSettings: Sendable, Hashable {
    /// The address put in the first reply's BND.ADDR instead of the listening socket's own, for a
    /// server behind NAT.
    public var advertise: String?
    /// Ports the listening sockets may use; nil for any free port.
    public var ports: ClosedRange<Int>?

    public init() {}
}

extension BindSettings {
    mutating func read(_ section: inout ConfigSection) {
        section.advertisedAddress(into: &advertise)
        section.portRange(into: &ports)
    }
}

extension ConfigSection {
    /// `advertise`: the public IP address clients reach this host at (behind NAT).
    mutating func advertisedAddress(into advertise: inout String?) {
        if let text = value("advertise", { text in
            IPAddress(text) != nil
                ? .success(text) : .failure(ConfigValues.Message("'\(text)' is not an IP address; give the public address clients reach this host at"))
        }) {
            advertise = text
        }
    }

    /// `port_range`: `LOW-HIGH` (or one port) the sockets of a command may use.
    mutating func portRange(into ports: inout ClosedRange<Int>?) {
        if let range = value("port_range", EgressRule.parsePorts) { ports = Int(range.lowerBound)...Int(range.upperBound) }
    }
}
