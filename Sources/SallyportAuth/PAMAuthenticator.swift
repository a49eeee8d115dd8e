import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SOCKSProtocol

/// RFC 1929 credentials checked through PAM, on a thread pool of its own so that PAM's blocking
/// never touches an event loop. The delay modules ask for after a failure (pam_unix's ~2 s) is
/// applied as an event-loop timer, not slept on a PAM thread.
///
/// The checks queued and running together are bounded, and so is each client's (IPv4 address or
/// IPv6 /64) share of them: past either bound a login is refused at once rather than queued
/// (NIOThreadPool's own queue has none). A queued check whose client has gone is dropped unrun. The
/// delay after a failure holds no thread and counts against neither bound (the login throttle
/// counts it against its client).
public final class PAMAuthenticator: Authenticator {
    public struct Configuration: Sendable, Hashable {
        /// The PAM service, as in `/etc/pam.d/SERVICE`.
        public var service: String = "sallyport"
        /// Threads running PAM transactions at once.
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
    }

    /// Checks queued or running, in all and per client.
    struct Load {
        var pending = 0
        var perClient: [ClientNetwork: Int] = [:]
        var started = 0
        var finished = 0
        var dropped = 0

        mutating func admit(_ client: ClientNetwork, _ configuration: Configuration) -> String? {
            guard pending < configuration.maxPending else { return "too many logins in progress (auth.pam.max_pending)" }
            guard perClient[client, default: 0] < configuration.maxPendingPerClient else {
                return "too many logins in progress from this client (auth.pam.max_pending_per_client)"
            }
            pending += 1
            perClient[client, default: 0] += 1
            return nil
        }

        mutating func release(_ client: ClientNetwork) {
            pending -= 1
            let left = perClient[client, default: 1] - 1
            perClient[client] = left > 0 ? left : nil
        }
    }

    public let configuration: Configuration
    private let pool: NIOThreadPool
    private let load = NIOLockedValueBox(Load())
    /// Told how long each transaction held its thread (for metrics).
    private let observe: @Sendable (TimeAmount) -> Void

    public init(configuration: Configuration, observe: @escaping @Sendable (TimeAmount) -> Void = { _ in }) {
        self.configuration = configuration
        self.observe = observe
        self.pool = NIOThreadPool(numberOfThreads: max(configuration.threads, 1))
        pool.start()
    }

    /// PAM transactions started since this authenticator was made.
    public var transactionsStarted: Int { load.withLockedValue { $0.started } }

    /// PAM transactions finished (their thread free again), delays after failures not included.
    public var transactionsFinished: Int { load.withLockedValue { $0.finished } }

    /// Checks dropped unrun because their client had gone.
    public var checksDropped: Int { load.withLockedValue { $0.dropped } }

    /// Checks waiting or running now.
    public var pendingChecks: Int { load.withLockedValue { $0.pending } }

    /// Stops the thread pool once running checks are done.
    public func shutdown() async {
        try? await pool.shutdownGracefully()
    }

    public func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let client = ClientNetwork(request.client)
        let configuration = self.configuration
        if let refusal = load.withLockedValue({ $0.admit(client, configuration) }) {
            return eventLoop.makeSucceededFuture(.refused(reason: refusal))
        }
        let load = self.load
        let observe = self.observe
        let checked = pool.runIfActive(eventLoop: eventLoop) { () -> (AuthenticationResult, TimeAmount) in
            guard request.stillWanted() else {
                load.withLockedValue { $0.dropped += 1 }
                return (.refused(reason: "the client left before its check ran"), .zero)
            }
            load.withLockedValue { $0.started += 1 }
            let started = NIODeadline.now()
            let outcome = runPAMTransaction(
                service: configuration.service, username: request.username, password: request.password,
                remoteHost: request.client?.ipAddress)
            observe(NIODeadline.now() - started)
            load.withLockedValue { $0.finished += 1 }
            guard outcome.success else {
                return (.failure(reason: "pam \(outcome.step): \(outcome.message)"), .microseconds(Int64(outcome.failDelayMicroseconds)))
            }
            // Rules, limits and logs see the account PAM authenticated, as NSS names it.
            let user = canonicalUserName(outcome.user ?? request.username)
            return (.success(Identity(user: user, groups: groupNames(ofUser: user))), .zero)
        }
        // The thread is free: the check no longer counts against max_pending.
        checked.whenComplete { _ in load.withLockedValue { $0.release(client) } }
        // The delay after a failure is a timer on the event loop.
        return checked.flatMap { answer, delay -> EventLoopFuture<AuthenticationResult> in
            guard delay > .zero else { return eventLoop.makeSucceededFuture(answer) }
            return eventLoop.scheduleTask(in: delay) { answer }.futureResult
        }
        .flatMapErrorThrowing { error in .refused(reason: "pam unavailable: \(error)") }
    }
}
