import CoreMetrics
import NIOCore
import NIOConcurrencyHelpers
import Prometheus
import SallyportRelay

/// The server's metrics, through the swift-metrics API into a Prometheus registry of this server's
/// own (two servers in one process never share counts). Everything is counted where a session, a
/// check or a lookup ends, never per byte; what is "now" (sessions, the PAM queue) is read when
/// `/metrics` is asked for.
public final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    /// The (listener, command) pairs given a sessions_active gauge so far: a pair with no session
    /// now is written as 0, not left at its last value.
    private let activePairs = NIOLockedValueBox<Set<[String]>>([])
    /// Asked for at every session's end: made once.
    private let bytesUp: CoreMetrics.Counter
    private let bytesDown: CoreMetrics.Counter

    /// Seconds: from 1 ms (a cache-warm PAM check, a lookup answered from the hosts file) to 10 s.
    static let durationBuckets: [Duration] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10].map { .milliseconds(Int64($0 * 1000)) }

    public init(version: String = sallyportVersion) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = Self.durationBuckets
        self.factory = factory
        bytesUp = CoreMetrics.Counter(label: "sallyport_relay_bytes_total", dimensions: [("direction", "up")], factory: factory)
        bytesDown = CoreMetrics.Counter(label: "sallyport_relay_bytes_total", dimensions: [("direction", "down")], factory: factory)
        CoreMetrics.Gauge(label: "sallyport_build_info", dimensions: [("version", version)], factory: factory).record(1)
        // Families that exist before their first event, so that a dashboard sees them at zero.
        for result in ["success", "failure", "throttled", "overloaded"] { counter("sallyport_auth_attempts_total", [("result", result)]).increment(by: 0) }
        for result in ["success", "failure"] { counter("sallyport_config_reloads_total", [("result", result)]).increment(by: 0) }
        for result in ["resolved", "failed", "cached", "timed_out"] { counter("sallyport_dns_lookups_total", [("result", result)]).increment(by: 0) }
        for direction in ["up", "down"] {
            counter("sallyport_udp_datagrams_total", [("direction", direction), ("outcome", "relayed")]).increment(by: 0)
        }
        gauge("sallyport_pam_queue_depth", []).record(0)
        _ = timer("sallyport_pam_duration_seconds", [])
        _ = timer("sallyport_dns_duration_seconds", [])
    }

    private func counter(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: label, dimensions: dimensions, factory: factory)
    }

    private func gauge(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Gauge {
        CoreMetrics.Gauge(label: label, dimensions: dimensions, factory: factory)
    }

    private func timer(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Timer {
        CoreMetrics.Timer(label: label, dimensions: dimensions, factory: factory)
    }

    /// A session is over: its command (`-` when it never asked), how it ended, the bytes it moved.
    func sessionEnded(command: String, end: String, up: UInt64, down: UInt64, user: String?) {
        counter("sallyport_sessions_total", [("command", command), ("end", end)]).increment()
        if up > 0 { bytesUp.increment(by: Int64(clamping: up)) }
        if down > 0 { bytesDown.increment(by: Int64(clamping: down)) }
        if let user {
            counter("sallyport_user_sessions_total", [("user", user)]).increment()
            counter("sallyport_user_bytes_total", [("user", user), ("direction", "up")]).increment(by: Int64(clamping: up))
            counter("sallyport_user_bytes_total", [("user", user), ("direction", "down")]).increment(by: Int64(clamping: down))
        }
    }

    /// A username/password login: `success`, `failure`, `throttled` or `overloaded`.
    func authAttempt(_ result: String) {
        counter("sallyport_auth_attempts_total", [("result", result)]).increment()
    }

    /// One PAM transaction's time on its thread (the delay after a failure not included).
    func pamTransaction(_ duration: TimeAmount) {
        timer("sallyport_pam_duration_seconds", []).recordNanoseconds(duration.nanoseconds)
    }

    /// One lookup by the system resolver (`resolved`, `failed`, `timed_out`), or an answer from the
    /// cache (`cached`, no duration).
    func dnsLookup(_ result: String, duration: TimeAmount?) {
        counter("sallyport_dns_lookups_total", [("result", result)]).increment()
        if let duration { timer("sallyport_dns_duration_seconds", []).recordNanoseconds(duration.nanoseconds) }
    }

    /// An association is over: its datagrams relayed each way and dropped, by reason.
    func udpDatagrams(_ counters: UDPCounters) {
        let counts = [
            ("up", "relayed", counters.datagramsUp), ("down", "relayed", counters.datagramsDown),
            ("up", "foreign", counters.droppedForeign), ("up", "malformed", counters.droppedMalformed),
            ("up", "fragment", counters.droppedFragments), ("up", "denied", counters.droppedDenied),
            ("up", "over_limit", counters.droppedOverLimit), ("up", "no_room", counters.droppedNoRoom),
        ]
        for (direction, outcome, count) in counts where count > 0 {
            counter("sallyport_udp_datagrams_total", [("direction", direction), ("outcome", outcome)]).increment(by: Int64(count))
        }
    }

    /// A request (or a client) refused by a rule or the special-address guard.
    func policyDenial(rule: String) {
        counter("sallyport_policy_denials_total", [("rule", rule)]).increment()
    }

    func configReload(succeeded: Bool) {
        counter("sallyport_config_reloads_total", [("result", succeeded ? "success" : "failure")]).increment()
    }

    /// The exposition text, with the gauges of what is alive now set first.
    /// `listeners`: every listener has a gauge for CONNECT and UDP, at 0 when idle.
    func exposition(sessions: [SessionSnapshot], listeners: [String], pamQueue: Int, usage: UsageReport? = nil) -> String {
        var active: [[String]: Int] = [:]
        for session in sessions { active[[session.listener, session.command ?? "negotiating"], default: 0] += 1 }
        let pairs = activePairs.withLockedValue { pairs in
            pairs.formUnion(active.keys)
            for listener in listeners { pairs.formUnion([[listener, "connect"], [listener, "udp"]]) }
            return pairs
        }
        for pair in pairs {
            gauge("sallyport_sessions_active", [("listener", pair[0]), ("command", pair[1])]).record(active[pair] ?? 0)
        }
        gauge("sallyport_pam_queue_depth", []).record(pamQueue)
        for user in usage?.users ?? [] {
            for (period, up, down) in [("day", user.day.up, user.day.down), ("month", user.month.up, user.month.down), ("total", user.total.up, user.total.down)] {
                gauge("sallyport_user_usage_bytes", [("user", user.user), ("period", period), ("direction", "up")]).record(Int64(clamping: up))
                gauge("sallyport_user_usage_bytes", [("user", user.user), ("period", period), ("direction", "down")]).record(Int64(clamping: down))
            }
            for quota in user.quotas {
                gauge("sallyport_user_quota_used_ratio", [("user", user.user), ("period", quota.period)])
                    .record(Double(quota.used) / Double(max(quota.bytes, 1)))
            }
        }
        return registry.emitToString()
    }
}
