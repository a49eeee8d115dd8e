import NIOConcurrencyHelpers
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// Counts sessions per user, per client and in all, and hands out the bandwidth buckets shared by
/// a user's sessions. One object lives as long as the server, across reloads.
final class SessionLimiter: Sendable {
    /// Which limit a session ran into.
    enum Refusal: Error, Equatable, Sendable {
        case server(Int)
        case user(Int)
        case client(Int)

        var logName: String {
            switch self {
            case .server: return "limit_server"
            case .user: return "limit_user"
            case .client: return "limit_client"
            }
        }

        var description: String {
            switch self {
            case .server(let limit): return "server session limit (limits.max_sessions = \(limit))"
            case .user(let limit): return "per-user session limit (limits.sessions_per_user = \(limit))"
            case .client(let limit): return "per-client session limit (limits.sessions_per_client = \(limit))"
            }
        }
    }

    /// What a session holds until it ends.
    struct Grant: Sendable {
        let user: String?
        let client: ClientNetwork
        let upload: RateLimiter?
        let download: RateLimiter?
    }

    private struct State {
        var total = 0
        var perUser: [String: Int] = [:]
        var perClient: [ClientNetwork: Int] = [:]
        var buckets: [String: (upload: RateLimiter, download: RateLimiter)] = [:]
    }

    private let state = NIOLockedValueBox(State())

    /// `client` is the client's network: its IPv4 address or IPv6 /64, as the login throttle and the
    /// resolver count clients (a host holds a whole /64 and could otherwise open a limit's worth of
    /// sessions per address).
    func acquire(user: String?, client: ClientNetwork, limits: Limits) -> Result<Grant, Refusal> {
        state.withLockedValue { state in
            if limits.maxSessions > 0, state.total >= limits.maxSessions { return .failure(.server(limits.maxSessions)) }
            if let user, limits.sessionsPerUser > 0, state.perUser[user, default: 0] >= limits.sessionsPerUser {
                return .failure(.user(limits.sessionsPerUser))
            }
            if limits.sessionsPerClient > 0, state.perClient[client, default: 0] >= limits.sessionsPerClient {
                return .failure(.client(limits.sessionsPerClient))
            }
            state.total += 1
            state.perClient[client, default: 0] += 1
            var buckets: (upload: RateLimiter, download: RateLimiter)?
            if let user {
                state.perUser[user, default: 0] += 1
                if limits.bandwidthPerUser > 0 {
                    if let existing = state.buckets[user] {
                        if existing.upload.bytesPerSecond != limits.bandwidthPerUser {
                            existing.upload.setRate(bytesPerSecond: limits.bandwidthPerUser)
                            existing.download.setRate(bytesPerSecond: limits.bandwidthPerUser)
                        }
                        buckets = existing
                    } else {
                        let fresh = (
                            upload: RateLimiter(bytesPerSecond: limits.bandwidthPerUser),
                            download: RateLimiter(bytesPerSecond: limits.bandwidthPerUser)
                        )
                        state.buckets[user] = fresh
                        buckets = fresh
                    }
                }
            }
            return .success(Grant(user: user, client: client, upload: buckets?.upload, download: buckets?.download))
        }
    }

    /// Grants held now.
    var held: Int { state.withLockedValue { $0.total } }

    func release(_ grant: Grant) {
        state.withLockedValue { state in
            state.total -= 1
            if let count = state.perClient[grant.client] {
                state.perClient[grant.client] = count > 1 ? count - 1 : nil
            }
            if let user = grant.user, let count = state.perUser[user] {
                if count > 1 {
                    state.perUser[user] = count - 1
                } else {
                    state.perUser[user] = nil
                    state.buckets[user] = nil
                }
            }
        }
    }
}
