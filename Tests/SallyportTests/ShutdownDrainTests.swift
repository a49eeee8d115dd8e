import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import Sallyport

/// The grace period of a shutdown, on an injected clock whose sleeps only move it forward.
@Suite(.timeLimit(.minutes(1))) struct ShutdownDrainTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func drain(grace: TimeAmount, clock: NIOLockedValueBox<NIODeadline>) -> ShutdownDrain {
        ShutdownDrain(
            grace: grace, now: { clock.withLockedValue { $0 } },
            sleep: { amount in clock.withLockedValue { $0 = $0 + amount } })
    }

    @Test func sessionsThatEndWithinTheGraceAreWaitedForAndNoLonger() async {
        let clock = NIOLockedValueBox(start)
        let end = start + .seconds(1)
        let drained = await drain(grace: .milliseconds(1500), clock: clock).wait { clock.withLockedValue { $0 } < end ? 3 : 0 }
        #expect(drained)
        let waited = clock.withLockedValue { $0 } - start
        #expect(waited >= .seconds(1) && waited <= .milliseconds(1050), "waited \(waited)")
    }

    @Test func sessionsThatOutliveTheGraceAreLeftAtItExactly() async {
        let clock = NIOLockedValueBox(start)
        let drained = await drain(grace: .milliseconds(1525), clock: clock).wait { 1 }
        #expect(!drained)
        #expect(clock.withLockedValue { $0 } - start == .milliseconds(1525), "the last sleep is cut to the grace")
    }

    @Test func aZeroGraceWaitsNotAtAllAndNoSessionsNeedNoWait() async {
        let clock = NIOLockedValueBox(start)
        #expect(await !drain(grace: .zero, clock: clock).wait { 5 })
        #expect(await drain(grace: .seconds(10), clock: clock).wait { 0 })
        #expect(clock.withLockedValue { $0 } == start)
    }
}
