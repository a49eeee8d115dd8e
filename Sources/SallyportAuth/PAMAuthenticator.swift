import NIOCore
import SOCKSProtocol

/// RFC 1929 credentials checked through PAM, on the check pool's threads. The delay modules ask for
/// after a failure (pam_unix's ~2 s) is applied as an event-loop timer, not slept on a thread.
public final class PAMAuthenticator: Authenticator {
    /// `auth.pam`: the service and the check pool's bounds.
    public struct Configuration: Sendable, Hashable {
        /// The PAM service, as in `/etc/pam.d/SERVICE`.
        public var service: String = "sallyport"
        /// Threads running checks at once (PAM's and the user file's: they share the pool).
        public var threads: Int = 4
        /// Checks waiting and running together; more are refused at once.
        public var maxPending: Int = 64
        /// Of those, the most one client may have.
        public var maxPendingPerClient: Int = 8

        public init(service: String = "sallyport", threads: Int = 4, maxPending: Int = 64, maxPendingPerClient: Int = 8) {
            self.service = service
            self.threads = threads
            self.maxPending = maxPending
            self.maxPendingPerClient = maxPendingPerClient
        }

        /// The bounds of the pool checks run on.
        public var pool: CheckPool.Configuration {
            CheckPool.Configuration(threads: threads, maxPending: maxPending, maxPendingPerClient: maxPendingPerClient)
        }
    }

    /// The PAM service, as in `/etc/pam.d/SERVICE`.
    public let service: String
    public let pool: CheckPool
    /// Told how long each transaction held its thread (for metrics).
    private let observe: @Sendable (TimeAmount) -> Void

    public init(service: String, pool: CheckPool, observe: @escaping @Sendable (TimeAmount) -> Void = { _ in }) {
        self.service = service
        self.pool = pool
        self.observe = observe
    }

    /// A PAM authenticator with a pool of its own.
    public convenience init(configuration: Configuration, observe: @escaping @Sendable (TimeAmount) -> Void = { _ in }) {
        self.init(service: configuration.service, pool: CheckPool(configuration: configuration.pool), observe: observe)
    }

    /// PAM transactions started (checks of the pool, which may serve a user file too).
    public var transactionsStarted: Int { pool.checksStarted }
    public var transactionsFinished: Int { pool.checksFinished }
    public var checksDropped: Int { pool.checksDropped }
    public var pendingChecks: Int { pool.pendingChecks }

    /// Stops the pool's threads once running checks are done.
    public func shutdown() async { await pool.shutdown() }

    public func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let (service, observe) = (self.service, self.observe)
        return pool.run(request, on: eventLoop) {
            let started = NIODeadline.now()
            let outcome = runPAMTransaction(
                service: service, username: request.username, password: request.password, remoteHost: request.client.flatMap(IPAddress.init).map { "\($0.unmapped)" })
            observe(NIODeadline.now() - started)
            guard outcome.success else {
                return (.failure(reason: "pam \(outcome.step): \(outcome.message)"), .microseconds(Int64(outcome.failDelayMicroseconds)))
            }
            // Rules, limits and logs see the account PAM authenticated, as NSS names it.
            let user = canonicalUserName(outcome.user ?? request.username)
            return (.success(Identity(user: user, groups: groupNames(ofUser: user))), .zero)
        }
    }
}
