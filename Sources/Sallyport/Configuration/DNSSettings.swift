import NIOCore

/// The name resolver shared by every session: its threads, its queue, each client's share, its cache.
public struct DNSSettings: Sendable, Hashable {
    /// Threads that run the system resolver (a restart changes it).
    public var threads = 16
    /// Lookups that may wait for a thread; past it lookups are refused at once.
    public var queue = 1024
    /// Lookups one client (an IPv4 address, an IPv6 /64) may have queued or running.
    public var perClient = 8
    /// How long an answer is reused; 0 turns the cache off.
    public var cacheTTL: TimeAmount = .seconds(30)
    /// How long a failed lookup is remembered.
    public var negativeTTL: TimeAmount = .seconds(5)
    /// Names the cache holds (the least recently used is forgotten).
    public var cacheSize = 4096

    public init() {}
}

extension DNSSettings {
    mutating func read(_ section: inout ConfigSection) {
        section.integer("threads", range: 1...256, into: &threads)
        section.integer("queue", range: 1...1_000_000, into: &queue)
        section.integer("per_client", range: 1...10_000, into: &perClient)
        section.durationOrZero("cache_ttl", into: &cacheTTL)
        section.durationOrZero("negative_ttl", into: &negativeTTL)
        section.integer("cache_size", range: 1...10_000_000, into: &cacheSize)
    }
}
