import NIOConcurrencyHelpers
import NIOCore
import SOCKSProtocol
import Logging

/// Failed-login throttling per client (an IPv4 address or IPv6 /64), as a value.
///
/// Each client's record keeps the failures of each user name within `window`, the checks it has in
/// flight, and its blocks. A client whose failures for all names together, plus its checks in
/// flight, reach `maxFailures` is refused without a check: a flood of guesses cannot outrun the
/// count by sending them all at once. Reaching the limit with failures starts a block of `backoff`,
/// doubling with each further block up to `maxBackoff`. A success clears only the failures of the
/// name that succeeded: one good account does not wipe out the guesses at another, nor the
/// escalation. (There is no lockout of a name from every address: that would let anyone lock a
/// colleague out.)
public struct LoginThrottle: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Failures within `window` that start a block; 0 turns throttling off.
        public var maxFailures: Int = 5
        public var window: TimeAmount = .seconds(60)
        /// The first block; later ones double.
        public var backoff: TimeAmount = .seconds(30)
        public var maxBackoff: TimeAmount = .minutes(15)

        public init(maxFailures: Int = 5, window: TimeAmount = .seconds(60), backoff: TimeAmount = .seconds(30), maxBackoff: TimeAmount = .minutes(15)) {
            self.maxFailures = maxFailures
            self.window = window
            self.backoff = backoff
            self.maxBackoff = maxBackoff
        }
    }

    /// What `begin` says of a client.
    public enum Decision: Equatable, Sendable {
        /// Go ahead; call `finish` with the outcome.
        case allowed
        /// Blocked after repeated failures.
        case blocked(until: NIODeadline)
        /// Its failures and checks in flight already reach the limit.
        case busy
    }

    /// How a check that `begin` allowed came out.
    public enum Outcome: Sendable {
        case success
        case failure
        /// No answer on the password (the checker refused or broke).
        case none
    }

    struct Record {
        var failures: [String: Int] = [:]
        var windowStart: NIODeadline
        var blockedUntil: NIODeadline?
        /// Blocks so far; each doubles the next.
        var strikes = 0
        var inFlight = 0

        var totalFailures: Int { failures.values.reduce(0, +) }
    }

    public let configuration: Configuration
    private var records: [String: Record] = [:]
    /// Records kept at most; past it, expired ones are dropped (and, if need be, the oldest).
    private let capacity: Int

    public init(configuration: Configuration, capacity: Int = 100_000) {
        self.configuration = configuration
        self.capacity = capacity
    }

    /// Clients with a record now.
    public var trackedClients: Int { records.count }

    /// Clients whose logins are refused now, until their block ends.
    public func blockedClients(now: NIODeadline) -> Int {
        records.values.lazy.filter { ($0.blockedUntil ?? now) > now }.count
    }

    /// Asks to check a login from `client`; when allowed, the check counts as in flight until
    /// `finish`.
    public mutating func begin(_ client: String, now: NIODeadline) -> Decision {
        guard configuration.maxFailures > 0 else { return .allowed }
        var record = records[client] ?? Record(windowStart: now)
        if let until = record.blockedUntil {
            if until > now { return .blocked(until: until) }
            record.blockedUntil = nil
            // A long good spell forgives earlier blocks.
            if now - until > configuration.maxBackoff { record.strikes = 0 }
        }
        if now - record.windowStart > configuration.window {
            record.failures = [:]
            record.windowStart = now
        }
        guard record.totalFailures + record.inFlight < configuration.maxFailures else {
            store(record, for: client, now: now)
            return .busy
        }
        record.inFlight += 1
        store(record, for: client, now: now)
        return .allowed
    }

    /// Records how a check that `begin` allowed came out. Returns the block a failure starts, if any.
    @discardableResult
    public mutating func finish(_ client: String, user: String, outcome: Outcome, now: NIODeadline) -> TimeAmount? {
        guard configuration.maxFailures > 0, var record = records[client] else { return nil }
        record.inFlight = max(record.inFlight - 1, 0)
        var started: TimeAmount?
        switch outcome {
        case .success:
            record.failures[user] = nil
        case .none:
            break
        case .failure:
            if now - record.windowStart > configuration.window {
                record.failures = [:]
                record.windowStart = now
            }
            record.failures[user, default: 0] += 1
            if record.totalFailures >= configuration.maxFailures, record.blockedUntil == nil {
                let factor = Int64(1) << Int64(min(record.strikes, 20))
                let (product, overflow) = configuration.backoff.nanoseconds.multipliedReportingOverflow(by: factor)
                let block = TimeAmount.nanoseconds(overflow ? configuration.maxBackoff.nanoseconds : min(product, configuration.maxBackoff.nanoseconds))
                record.blockedUntil = now + block
                record.strikes += 1
                record.failures = [:]
                record.windowStart = now
                started = block
            }
        }
        let idle = record.failures.isEmpty && record.inFlight == 0 && record.blockedUntil == nil && record.strikes == 0
        records[client] = idle ? nil : record
        return started
    }

    private mutating func store(_ record: Record, for client: String, now: NIODeadline) {
        if records[client] == nil, records.count >= capacity { prune(now: now) }
        records[client] = record
    }

    /// Drops what has expired and, if the table is still full (clients failing from more addresses
    /// than it holds), the oldest tenth at once: the scan is paid once per many insertions, not on
    /// every failure of a flood.
    private mutating func prune(now: NIODeadline) {
        records = records.filter { _, record in
            if record.inFlight > 0 { return true }
            if let until = record.blockedUntil { return until > now }
            return now - record.windowStart <= configuration.window
        }
        guard records.count >= capacity else { return }
        let excess = records.count - capacity + max(capacity / 10, 1)
        for (client, _) in records.sorted(by: { $0.value.windowStart < $1.value.windowStart }).prefix(excess) {
            records[client] = nil
        }
    }

    /// The throttling key of an address: the IP for IPv4, the /64 network for IPv6 (one host holds
    /// a whole /64 and can change addresses in it at will).
    public static func key(for address: SocketAddress?) -> String {
        ClientNetwork(address).description
    }
}

/// Wraps an authenticator with `LoginThrottle`: a throttled client is refused without a check,
/// after `refusalDelay` (the user file's fail delay: a throttled login then looks like a wrong one).
public final class ThrottledAuthenticator: Authenticator {
    public let base: any Authenticator
    private let throttle: NIOLockedValueBox<LoginThrottle>
    private let logger: Logger
    public let refusalDelay: TimeAmount

    public init(base: any Authenticator, configuration: LoginThrottle.Configuration, logger: Logger, refusalDelay: TimeAmount = .zero) {
        self.base = base
        self.throttle = NIOLockedValueBox(LoginThrottle(configuration: configuration))
        self.logger = logger
        self.refusalDelay = refusalDelay
    }

    /// In front of a new checker, with the record of `previous` (a reload that kept the settings).
    public init(base: any Authenticator, continuing previous: ThrottledAuthenticator, refusalDelay: TimeAmount = .zero) {
        self.base = base
        self.throttle = previous.throttle
        self.logger = previous.logger
        self.refusalDelay = refusalDelay
    }

    /// Clients blocked now.
    public var blockedClients: Int { throttle.withLockedValue { $0.blockedClients(now: .now()) } }

    public func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let key = LoginThrottle.key(for: request.client)
        let refusal: String
        switch throttle.withLockedValue({ $0.begin(key, now: .now()) }) {
        case .blocked(let until):
            let seconds = max((until - .now()).nanoseconds / 1_000_000_000, 1)
            refusal = "throttled after repeated failures, \(seconds)s left"
        case .busy:
            refusal = "throttled: recent failures and checks in flight reach the limit"
        case .allowed:
            return checked(request, key: key, on: eventLoop)
        }
        guard refusalDelay > .zero else { return eventLoop.makeSucceededFuture(.refused(reason: refusal, why: .throttled)) }
        return eventLoop.scheduleTask(in: refusalDelay) { AuthenticationResult.refused(reason: refusal, why: .throttled) }.futureResult
    }

    private func checked(_ request: AuthenticationRequest, key: String, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let throttle = self.throttle
        let logger = self.logger
        let user = request.username
        return base.authenticate(request, on: eventLoop).always { result in
            let outcome: LoginThrottle.Outcome
            switch result {
            case .success(.success): outcome = .success
            case .success(.failure): outcome = .failure
            case .success(.refused), .failure: outcome = .none
            }
            if let block = throttle.withLockedValue({ $0.finish(key, user: user, outcome: outcome, now: .now()) }) {
                logger.warning("login throttled", metadata: ["client": "\(key)", "user": "\(user)", "seconds": "\(block.nanoseconds / 1_000_000_000)"])
            }
        }
    }
}
