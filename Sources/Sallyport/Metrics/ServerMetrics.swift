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
    /// The users given series of their own so far, and how many may be: past the limit, a user's
    /// numbers go to `user="other"`. Only authenticated identities ever get here, so the label set
    /// is bounded by the accounts, and by this limit whatever happens.
    private let userLabels = NIOLockedValueBox<(users: Set<String>, limit: Int)>(([], 500))
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
        counter("sallyport_connections_refused_total", [("reason", "per_client")]).increment(by: 0)
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

    /// Each TLS listener's certificate `notAfter`, Unix seconds: set at start and at every reload.
    func certificateExpiries(_ expiries: [(listener: String, expiry: Int)]) {
        for (listener, expiry) in expiries {
            gauge("sallyport_tls_certificate_expiry_seconds", [("listener", listener)]).record(expiry)
        }
    }

    /// How many users may have series of their own (`admin.per_user_metrics_limit`). Users
    /// already given series keep them.
    func limitUserSeries(to limit: Int) {
        userLabels.withLockedValue { $0.limit = limit }
    }

    /// The label a user's numbers go under: the name, or `other` once the limit is reached. A
    /// session claims its user's at login, so the first users to log in keep their own series
    /// whichever of their sessions ends first.
    func userLabel(_ user: String) -> String {
        userLabels.withLockedValue { labels in
            if labels.users.contains(user) { return user }
            guard labels.users.count < labels.limit else { return "other" }
            labels.users.insert(user)
            return user
        }
    }

    /// A session is over: its command (`-` when it never asked), how it ended, the bytes it moved;
    /// `user` only for an authenticated identity (never a name a failed login typed).
    func sessionEnded(command: String, end: String, up: UInt64, down: UInt64, user: String?) {
        counter("sallyport_sessions_total", [("command", command), ("end", end)]).increment()
        if up > 0 { bytesUp.increment(by: Int64(clamping: up)) }
        if down > 0 { bytesDown.increment(by: Int64(clamping: down)) }
        if let name = user {
            let user = userLabel(name)
            counter("sallyport_user_sessions_total", [("user", user)]).increment()
            counter("sallyport_user_bytes_total", [("user", user), ("direction", "up")]).increment(by: Int64(clamping: up))
            counter("sallyport_user_bytes_total", [("user", user), ("direction", "down")]).increment(by: Int64(clamping: down))
        }
    }

    /// How a username/password login went: the `result` label.
    enum LoginResult: String {
        case success
        case failure
        case throttled
        case overloaded
    }

    func authAttempt(_ result: LoginResult) {
        counter("sallyport_auth_attempts_total", [("result", result.rawValue)]).increment()
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
            ("up", "over_limit", counters.droppedOverLimit), ("up", "over_quota", counters.droppedOverQuota), ("up", "no_room", counters.droppedNoRoom),
        ]
        for (direction, outcome, count) in counts where count > 0 {
            counter("sallyport_udp_datagrams_total", [("direction", direction), ("outcome", outcome)]).increment(by: Int64(count))
        }
    }

    /// A request (or a client) refused by a rule or the special-address guard.
    func policyDenial(rule: String) {
        counter("sallyport_policy_denials_total", [("rule", rule)]).increment()
    }

    /// A connection closed at accept (`per_client`: its client held `connections_per_client`).
    func connectionRefused(reason: String) {
        counter("sallyport_connections_refused_total", [("reason", reason)]).increment()
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
        // Users past the limit share `other`: their sums, and the highest ratio among them.
        var sums: [[String]: UInt64] = [:]
        var ratios: [[String]: Double] = [:]
        for user in usage?.users ?? [] {
            let label = userLabel(user.user)
            for (period, up, down) in [("day", user.day.up, user.day.down), ("month", user.month.up, user.month.down), ("total", user.total.up, user.total.down)] {
                sums[[label, period, "up"], default: 0] &+= up
                sums[[label, period, "down"], default: 0] &+= down
            }
            for quota in user.quotas {
                ratios[[label, quota.period]] = max(ratios[[label, quota.period]] ?? 0, Double(quota.used) / Double(max(quota.bytes, 1)))
            }
        }
        for (key, bytes) in sums {
            gauge("sallyport_user_usage_bytes", [("user", key[0]), ("period", key[1]), ("direction", key[2])]).record(Int64(clamping: bytes))
        }
        for (key, ratio) in ratios { gauge("sallyport_user_quota_used_ratio", [("user", key[0]), ("period", key[1])]).record(ratio) }
        return registry.emitToString()
    }
}
