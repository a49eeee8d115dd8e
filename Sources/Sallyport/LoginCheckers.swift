import Logging
import SallyportAuth

/// What checks username/password logins under one configuration: the pool checks run on, and for
/// each checker some listener uses (PAM, the user file) a cache in front of a throttle in front of
/// the checker. The cache comes first: a remembered or merged login is no guess, and the throttle
/// counts the checks that reach the checker.
struct LoginCheckers: Sendable {
    struct Stack: Sendable {
        var cache: CachingAuthenticator
        var throttle: ThrottledAuthenticator
    }

    /// Made only when some listener offers method `username`.
    var pool: CheckPool?
    var stacks: [LoginChecker: Stack] = [:]

    static let none = LoginCheckers()

    /// Makes the checkers `configuration` needs, keeping what did not change since `previous`:
    /// the pool when its bounds are the same, each throttle's record when its settings are.
    static func make(
        _ configuration: ServerConfiguration, previous: (settings: AuthenticationSettings, checkers: LoginCheckers)?, logger: Logger,
        metrics: ServerMetrics
    ) -> LoginCheckers {
        let inUse = configuration.checkersInUse
        guard !inUse.isEmpty else { return .none }
        let auth = configuration.auth
        if let previous, previous.settings == auth, Set(previous.checkers.stacks.keys) == inUse {
            // Same settings and files: keep all; forget the remembered logins.
            for stack in previous.checkers.stacks.values { stack.cache.clear() }
            return previous.checkers
        }
        let pool = previous?.checkers.pool.flatMap { $0.configuration == auth.pam.pool ? $0 : nil } ?? CheckPool(configuration: auth.pam.pool)
        var checkers = LoginCheckers(pool: pool)
        for checker in inUse {
            let base: any Authenticator
            switch checker {
            case .pam:
                base = PAMAuthenticator(service: auth.pam.service, pool: pool, observe: { metrics.pamTransaction($0) })
            case .file:
                base = FileAuthenticator(users: auth.users ?? UserFile(), pool: pool, failDelay: auth.failDelay)
            }
            // A throttled login against the file is answered after the fail delay too: it looks like
            // a wrong password (PAM's modules keep their own delays).
            let delay = checker == .file ? auth.failDelay : .zero
            let throttle: ThrottledAuthenticator
            if let previous, previous.settings.throttle == auth.throttle, let kept = previous.checkers.stacks[checker]?.throttle {
                throttle = ThrottledAuthenticator(base: base, continuing: kept, refusalDelay: delay)
            } else {
                throttle = ThrottledAuthenticator(base: base, configuration: auth.throttle, logger: logger, refusalDelay: delay)
            }
            checkers.stacks[checker] = Stack(cache: CachingAuthenticator(base: throttle, lifetime: auth.cacheTTL), throttle: throttle)
        }
        return checkers
    }

    func authenticator(for checker: LoginChecker) -> (any Authenticator)? { stacks[checker]?.cache }

    /// Checks waiting or running now.
    var pendingChecks: Int { pool?.pendingChecks ?? 0 }

    /// Clients blocked now, by every throttle.
    var blockedClients: Int { stacks.values.reduce(0) { $0 + $1.throttle.blockedClients } }
}
