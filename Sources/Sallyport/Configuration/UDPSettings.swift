import NIOCore
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// UDP ASSOCIATE.
public struct UDPSettings: Sendable, Hashable {
    /// Serve UDP ASSOCIATE (reply 0x07 when off).
    public var enabled = true
    /// The address put in the reply's BND.ADDR instead of the socket's own, for a server behind NAT.
    public var advertise: String?
    /// Ports the relay sockets may use; nil for any free port.
    public var ports: ClosedRange<Int>?
    /// End an association when no datagram has moved for this long; nil never (the control
    /// connection still ends it).
    public var idle: TimeAmount? = .minutes(2)
    /// Destinations with an open socket at once per association (the least recently used closes).
    public var maxDestinations = 256
    /// Destinations of one association being checked (looked up) at once.
    public var maxPendingDestinations = 32
    /// Bytes one association may hold for destinations being checked.
    public var maxPendingBytes = 256 * 1024
    /// Refused destinations one association remembers, so that their datagrams cost no new check.
    public var refusedMemory = 256

    public init() {}
}

extension UDPSettings {
    mutating func read(_ section: inout ConfigSection) {
        section.bool("enabled", into: &enabled)
        section.advertisedAddress(into: &advertise)
        section.portRange(into: &ports)
        section.duration("idle", into: &idle)
        section.integer("max_destinations", range: 1...65_536, into: &maxDestinations)
        section.integer("max_pending_destinations", range: 1...65_536, into: &maxPendingDestinations)
        section.byteSize("max_pending_bytes", range: 0...(64 << 20), into: &maxPendingBytes)
        section.integer("refused_memory", range: 1...65_536, into: &refusedMemory)
    }
}

extension UDPSettings {
    /// The relay's settings for one association under a limiter grant.
    func relayConfiguration(grant: SessionLimiter.Grant?) -> UDPRelayConfiguration {
        UDPRelayConfiguration(
            idleTimeout: idle, clientToTargetLimit: grant?.upload, targetToClientLimit: grant?.download, maxDestinations: maxDestinations,
            maxPendingDestinations: maxPendingDestinations, maxPendingBytes: maxPendingBytes, refusedMemory: refusedMemory)
    }
}
