import NIOCore
import Testing

@testable import SallyportRelay

/// The token bucket behind bandwidth limits, on an injected clock.
@Suite(.timeLimit(.minutes(1))) struct RateLimiterTests {
    @Test func rateLimiterRefillsAtItsRateOnAnInjectedClock() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let limiter = RateLimiter(bytesPerSecond: 1_000_000, now: start)
        // A burst of a tenth of a second's worth is free; past it the reader waits for the debt.
        #expect(limiter.consume(100_000, now: start) == .zero)
        #expect(limiter.consume(50_000, now: start) == .milliseconds(50))
        // 50 ms later the debt is paid; 100 ms more refills 100,000 bytes.
        #expect(limiter.consume(0, now: start + .milliseconds(50)) == .zero)
        #expect(limiter.consume(100_000, now: start + .milliseconds(150)) == .zero)
        // The bucket never holds more than its burst, however long it rested.
        #expect(limiter.consume(200_000, now: start + .seconds(60)) == .milliseconds(100))
    }

    @Test func rateLimiterIsSharedByBothItsUsers() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let shared = RateLimiter(bytesPerSecond: 1_000_000, now: start)
        #expect(shared.consume(60_000, now: start) == .zero)
        // A second session of the same user takes from the same bucket.
        #expect(shared.consume(60_000, now: start) == .milliseconds(20))
        shared.setRate(bytesPerSecond: 2_000_000)
        #expect(shared.bytesPerSecond == 2_000_000)
    }

    @Test func droppedDatagramsTakeNoTokensAndDebtHasAFloor() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let bucket = RateLimiter(bytesPerSecond: 100_000, now: start)
        // A datagram flood: what does not fit is refused and costs nothing.
        #expect(bucket.take(16_384, now: start))
        for _ in 0..<10_000 { #expect(!bucket.take(1_000, now: start)) }
        // So the user's TCP reads wait only for their own bytes.
        #expect(bucket.consume(1_000, now: start) == .milliseconds(10))
        // A huge read owes at most ten seconds, and the wait is computed without trapping.
        #expect(bucket.consume(Int.max / 2, now: start) == .seconds(10))
        #expect(RateLimiter.wait(for: .infinity, rate: 1) == .seconds(10))
        #expect(RateLimiter.wait(for: 1e300, rate: 1e-300) == .seconds(10))
    }
}
