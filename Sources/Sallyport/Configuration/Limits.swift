/// Limits on what a client may use. 0 means no limit.
public struct Limits: Sendable, Hashable {
    /// Bytes a client may send ahead of the server's answer before it is closed.
    public var earlyDataBytes: Int = 64 * 1024
    /// Sessions alive at once on the whole server (negotiating ones included).
    public var maxSessions: Int = 0
    /// Sessions one authenticated user may have at once.
    public var sessionsPerUser: Int = 0
    /// Sessions one client IP may have at once.
    public var sessionsPerClient: Int = 0
    /// Connections one client (an IPv4 address, an IPv6 /64) may hold at once, counted from
    /// accept, negotiating ones included; more are closed at accept. Not applied on listeners
    /// behind a PROXY-protocol balancer (every connection comes from the balancer there).
    public var connectionsPerClient: Int = 256
    /// Bytes per second each way, shared by all sessions of one authenticated user.
    public var bandwidthPerUser: Int = 0

    public init() {}
}

extension Limits {
    mutating func read(_ section: inout ConfigSection) {
        section.byteSize("early_data", range: 0...(16 << 20), into: &earlyDataBytes)
        section.integer("max_sessions", range: 0...10_000_000, into: &maxSessions)
        section.integer("sessions_per_user", range: 0...10_000_000, into: &sessionsPerUser)
        section.integer("sessions_per_client", range: 0...10_000_000, into: &sessionsPerClient)
        section.integer("connections_per_client", range: 0...10_000_000, into: &connectionsPerClient)
        if let rate = section.value("bandwidth_per_user", { text -> Result<Int, ConfigValues.Message> in
            guard let rate = ConfigValues.byteSize(text), (0...(1 << 40)).contains(rate) else {
                return .failure(ConfigValues.Message("'\(text)' is not a rate from 0 to 1TiB bytes/s; write bytes or use KiB, MiB"))
            }
            guard rate == 0 || rate >= 1024 else {
                return .failure(ConfigValues.Message("'\(rate)' bytes/s is too small to shape smoothly; use 0 (no limit) or at least 1KiB"))
            }
            return .success(rate)
        }) {
            bandwidthPerUser = rate
        }
    }
}
