import NIOConcurrencyHelpers
import NIOCore
import SOCKSProtocol
import Logging

/// Failed-login throttling per client, as a value: after `maxFailures` failures within `window`,
/// the client is refused without a check for `backoff`; each further block doubles it, up to
/// `maxBackoff`. A success clears the client's record.
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

    /// What `check` says of a client.
    public enum Decision: Equatable, Sendable {
        case allowed
        case blocked(until: NIODeadline)
    }

    struct Record {
        var failures = 0
        var windowStart: NIODeadline
        var blockedUntil: NIODeadline?
        /// Blocks so far; each doubles the next.
        var strikes = 0
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

    public func check(_ client: String, now: NIODeadline) -> Decision {
        guard configuration.maxFailures > 0, let until = records[client]?.blockedUntil, until > now else { return .allowed }
        return .blocked(until: until)
    }

    /// Records a failed login. Returns the block it starts, if it starts one.
    public mutating func recordFailure(_ client: String, now: NIODeadline) -> TimeAmount? {
        guard configuration.maxFailures > 0 else { return nil }
        var record = records[client] ?? Record(windowStart: now)
        if let until = record.blockedUntil, now >= until {
            record.blockedUntil = nil
            // A long good spell forgives earlier blocks.
            if now - until > configuration.maxBackoff { record.strikes = 0 }
        }
        if now - record.windowStart > configuration.window {
            record.failures = 0
            record.windowStart = now
        }
        record.failures += 1
        var started: TimeAmount?
        if record.failures >= configuration.maxFailures {
            let factor = Int64(1) << Int64(min(record.strikes, 20))
            let block = TimeAmount.nanoseconds(min(configuration.backoff.nanoseconds &* factor, configuration.maxBackoff.nanoseconds))
            record.blockedUntil = now + block
            record.strikes += 1
            record.failures = 0
            record.windowStart = now
            started = block
        }
        if records[client] == nil, records.count >= capacity { prune(now: now) }
        records[client] = record
        return started
    }

    public mutating func recordSuccess(_ client: String) {
        records[client] = nil
    }

    /// Drops what has expired and, if the table is still full (clients failing from more addresses
    /// than it holds), the oldest tenth at once: the scan is paid once per many insertions, not on
    /// every failure of a flood.
    private mutating func prune(now: NIODeadline) {
        records = records.filter { _, record in
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

/// Wraps an authenticator with `LoginThrottle`: a throttled client is refused without a check.
public final class ThrottledAuthenticator: Authenticator {
    public let base: any Authenticator
    private let throttle: NIOLockedValueBox<LoginThrottle>
    private let logger: Logger

    public init(base: any Authenticator, configuration: LoginThrottle.Configuration, logger: Logger) {
        self.base = base
        self.throttle = NIOLockedValueBox(LoginThrottle(configuration: configuration))
        self.logger = logger
    }

    public func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let key = LoginThrottle.key(for: request.client)
        if case .blocked(let until) = throttle.withLockedValue({ $0.check(key, now: .now()) }) {
            let seconds = max((until - .now()).nanoseconds / 1_000_000_000, 1)
            return eventLoop.makeSucceededFuture(.refused(reason: "throttled after repeated failures, \(seconds)s left"))
        }
        let throttle = self.throttle
        let logger = self.logger
        return base.authenticate(request, on: eventLoop).map { result in
            switch result {
            case .success:
                throttle.withLockedValue { $0.recordSuccess(key) }
            case .failure:
                if let block = throttle.withLockedValue({ $0.recordFailure(key, now: .now()) }) {
                    logger.warning(
                        "login throttled",
                        metadata: ["client": "\(key)", "user": "\(request.username)", "seconds": "\(block.nanoseconds / 1_000_000_000)"])
                }
            case .refused:
                break
            }
            return result
        }
    }
}
