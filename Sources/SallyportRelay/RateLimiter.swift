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

    /// Takes `bytes` from the bucket (it may go into debt) and returns how long the reader should
    /// wait before reading again: zero while there are tokens left.
    public func consume(_ bytes: Int, now: NIODeadline = .now()) -> TimeAmount {
        state.withLockedValue { state in
            let elapsed = Double((now - state.last).nanoseconds) / 1e9
            if elapsed > 0 {
                state.tokens = min(state.capacity, state.tokens + elapsed * state.rate)
                state.last = now
            }
            state.tokens -= Double(bytes)
            guard state.tokens < 0 else { return .zero }
            return .nanoseconds(Int64(-state.tokens / state.rate * 1e9))
        }
    }
}
