import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// RFC 1929 credentials checked through PAM, on a thread pool of its own so that PAM's blocking
/// never touches an event loop. The delay modules ask for after a failure (pam_unix's ~2 s) is
/// applied as an event-loop timer, not slept on a PAM thread.
///
/// The checks queued and running together are bounded: past the bound a login is refused at once
/// rather than queued without limit (NIOThreadPool's own queue has none).
public final class PAMAuthenticator: Authenticator {
    public struct Configuration: Sendable, Hashable {
        /// The PAM service, as in `/etc/pam.d/SERVICE`.
        public var service: String = "sallyport"
        /// Threads running PAM transactions at once.
        public var threads: Int = 4
        /// Checks waiting and running together; more are refused at once.
        public var maxPending: Int = 64

        public init(service: String = "sallyport", threads: Int = 4, maxPending: Int = 64) {
            self.service = service
            self.threads = threads
            self.maxPending = maxPending
        }
    }

    public let configuration: Configuration
    private let pool: NIOThreadPool
    private let pending = NIOLockedValueBox(0)
    private let started = NIOLockedValueBox(0)
    private let finished = NIOLockedValueBox(0)

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.pool = NIOThreadPool(numberOfThreads: max(configuration.threads, 1))
        pool.start()
    }

    /// PAM transactions started since this authenticator was made.
    public var transactionsStarted: Int { started.withLockedValue { $0 } }

    /// PAM transactions finished (their thread free again), delays after failures not included.
    public var transactionsFinished: Int { finished.withLockedValue { $0 } }

    /// Checks waiting or running now.
    public var pendingChecks: Int { pending.withLockedValue { $0 } }

    /// Stops the thread pool once running checks are done.
    public func shutdown() async {
        try? await pool.shutdownGracefully()
    }

    public func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let admitted = pending.withLockedValue { count in
            guard count < configuration.maxPending else { return false }
            count += 1
            return true
        }
        guard admitted else {
            return eventLoop.makeSucceededFuture(.refused(reason: "too many logins in progress (auth.pam.max_pending)"))
        }
        let service = configuration.service
        let started = self.started
        let finished = self.finished
        let pending = self.pending
        let checked = pool.runIfActive(eventLoop: eventLoop) { () -> (AuthenticationResult, TimeAmount) in
            started.withLockedValue { $0 += 1 }
            let outcome = runPAMTransaction(
                service: service, username: request.username, password: request.password,
                remoteHost: request.client?.ipAddress)
            finished.withLockedValue { $0 += 1 }
            guard outcome.success else {
                return (.failure(reason: "pam \(outcome.step): \(outcome.message)"), .microseconds(Int64(outcome.failDelayMicroseconds)))
            }
            // Rules, limits and logs see the account PAM authenticated, as NSS names it.
            let user = canonicalUserName(outcome.user ?? request.username)
            return (.success(Identity(user: user, groups: groupNames(ofUser: user))), .zero)
        }
        // The delay after a failure is a timer on the event loop: the PAM thread is already free.
        let result = checked.flatMap { answer, delay -> EventLoopFuture<AuthenticationResult> in
            guard delay > .zero else { return eventLoop.makeSucceededFuture(answer) }
            return eventLoop.scheduleTask(in: delay) { answer }.futureResult
        }
        // A check counts against max_pending until it is answered, delay included.
        result.whenComplete { _ in pending.withLockedValue { $0 -= 1 } }
        return result.flatMapErrorThrowing { error in .refused(reason: "pam unavailable: \(error)") }
    }
}
