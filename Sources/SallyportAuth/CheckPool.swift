import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SOCKSProtocol

/// The threads password checks run on (PAM transactions, user-file hashes), so that their blocking
/// and their CPU never touch an event loop.
///
/// The checks queued and running together are bounded, and so is each client's (IPv4 address or
/// IPv6 /64) share of them: past either bound a login is refused at once rather than queued
/// (NIOThreadPool's own queue has none). A queued check whose client has gone is dropped unrun. The
/// delay a check asks for after a failure is an event-loop timer: it holds no thread and counts
/// against neither bound (the login throttle counts it against its client).
public final class CheckPool: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Threads running checks at once.
        public var threads: Int = 4
        /// Checks waiting and running together; more are refused at once.
        public var maxPending: Int = 64
        /// Of those, the most one client may have.
        public var maxPendingPerClient: Int = 8

        public init(threads: Int = 4, maxPending: Int = 64, maxPendingPerClient: Int = 8) {
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

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.pool = NIOThreadPool(numberOfThreads: max(configuration.threads, 1))
        pool.start()
    }

    /// Checks started since this pool was made.
    public var checksStarted: Int { load.withLockedValue { $0.started } }

    /// Checks finished (their thread free again), delays after failures not included.
    public var checksFinished: Int { load.withLockedValue { $0.finished } }

    /// Checks dropped unrun because their client had gone.
    public var checksDropped: Int { load.withLockedValue { $0.dropped } }

    /// Checks waiting or running now.
    public var pendingChecks: Int { load.withLockedValue { $0.pending } }

    /// Stops the threads once running checks are done.
    public func shutdown() async {
        try? await pool.shutdownGracefully()
    }

    /// Runs `check` on a pool thread for `request`, when the bounds admit it. `check` answers with
    /// the result and the delay to wait before giving it.
    public func run(
        _ request: AuthenticationRequest, on eventLoop: any EventLoop,
        _ check: @escaping @Sendable () -> (AuthenticationResult, TimeAmount)
    ) -> EventLoopFuture<AuthenticationResult> {
        let client = ClientNetwork(request.client)
        if let refusal = load.withLockedValue({ $0.admit(client, configuration) }) {
            return eventLoop.makeSucceededFuture(.refused(reason: refusal))
        }
        let load = self.load
        let checked = pool.runIfActive(eventLoop: eventLoop) { () -> (AuthenticationResult, TimeAmount) in
            guard request.stillWanted() else {
                load.withLockedValue { $0.dropped += 1 }
                return (.refused(reason: "the client left before its check ran"), .zero)
            }
            load.withLockedValue { $0.started += 1 }
            defer { load.withLockedValue { $0.finished += 1 } }
            return check()
        }
        // The thread is free: the check no longer counts against max_pending.
        checked.whenComplete { _ in load.withLockedValue { $0.release(client) } }
        return checked.flatMap { answer, delay -> EventLoopFuture<AuthenticationResult> in
            guard delay > .zero else { return eventLoop.makeSucceededFuture(answer) }
            return eventLoop.scheduleTask(in: delay) { answer }.futureResult
        }
        .flatMapErrorThrowing { error in .refused(reason: "checker unavailable: \(error)") }
    }
}
