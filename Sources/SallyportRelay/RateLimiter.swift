import NIOConcurrencyHelpers
import NIOCore

/// A token bucket shared by every session of one user in one direction (sessions may live on
/// different event loops, hence the lock; it is taken once per read, and only for limited users).
///
/// The relay reads a chunk, forwards it, and asks the bucket how long to wait before reading that
/// side again: reading pauses on a timer, never in a loop, and TCP's own backpressure slows the
/// sender meanwhile.
public final class RateLimiter: Sendable {
    private struct State {
        var rate: Double
        var capacity: Double
        var tokens: Double
        var last: NIODeadline
    }

    private let state: NIOLockedValueBox<State>

    /// - Parameter bytesPerSecond: the sustained rate; bursts are limited to a tenth of a second of
    ///   it (at least 16 KiB).
    ///   `now` is the clock's reading at the start (tests inject their own).
    public init(bytesPerSecond: Int, now: NIODeadline = .now()) {
        let rate = Double(max(bytesPerSecond, 1))
        let capacity = Self.capacity(for: rate)
        state = NIOLockedValueBox(State(rate: rate, capacity: capacity, tokens: capacity, last: now))
    }

    static func capacity(for rate: Double) -> Double { max(rate / 10, 16 * 1024) }

    public var bytesPerSecond: Int { state.withLockedValue { Int($0.rate) } }

    /// Changes the rate (configuration reload); sessions already running follow it.
    public func setRate(bytesPerSecond: Int) {
        state.withLockedValue { state in
            state.rate = Double(max(bytesPerSecond, 1))
            state.capacity = Self.capacity(for: state.rate)
            state.tokens = min(state.tokens, state.capacity)
        }
    }

    /// The most a bucket may owe, in seconds of its rate: bytes already read must be paid for, but
    /// a debt past this is forgotten, so no burst can stall the user for longer.
    static let maximumDebtSeconds = 10.0

    /// Takes `bytes` from the bucket (it may go into debt, up to `maximumDebtSeconds`) and returns
    /// how long the reader should wait before reading again: zero while there are tokens left. For
    /// bytes already read (TCP).
    public func consume(_ bytes: Int, now: NIODeadline = .now()) -> TimeAmount {
        state.withLockedValue { state in
            Self.refill(&state, now: now)
            state.tokens = max(state.tokens - Double(bytes), -state.rate * Self.maximumDebtSeconds)
            guard state.tokens < 0 else { return .zero }
            return Self.wait(for: -state.tokens, rate: state.rate)
        }
    }

    /// Takes `bytes` if the bucket holds them, else takes nothing: for datagrams, which are dropped
    /// when over the rate and so must not make the user's other sessions wait.
    public func take(_ bytes: Int, now: NIODeadline = .now()) -> Bool {
        state.withLockedValue { state in
            Self.refill(&state, now: now)
            guard state.tokens >= Double(bytes) else { return false }
            state.tokens -= Double(bytes)
            return true
        }
    }

    private static func refill(_ state: inout State, now: NIODeadline) {
        let elapsed = Double((now - state.last).nanoseconds) / 1e9
        if elapsed > 0 {
            state.tokens = min(state.capacity, state.tokens + elapsed * state.rate)
            state.last = now
        }
    }

    /// The time `debt` bytes take at `rate`, without trapping on any value.
    static func wait(for debt: Double, rate: Double) -> TimeAmount {
        let nanoseconds = debt / rate * 1e9
        guard nanoseconds.isFinite, nanoseconds < 1e17 else { return .seconds(Int64(maximumDebtSeconds)) }
        return .nanoseconds(Int64(max(nanoseconds, 0)))
    }
}
