import NIOCore
import NIOEmbedded
import Testing

@testable import SallyportRelay

/// The idle timeout's timer, on an embedded event loop's clock.
@Suite(.timeLimit(.minutes(1))) struct IdleWatchTests {
    @Test func idleWatchFiresBetweenOneAndOneAndAQuarterTimeoutsAfterTheLastActivity() {
        let loop = EmbeddedEventLoop()
        var activity: UInt64 = 0
        var fired = false
        let watch = IdleWatch(timeout: .seconds(4), eventLoop: loop, activity: { activity }, onIdle: { fired = true })
        watch?.start()
        loop.advanceTime(by: .seconds(3))
        activity += 1  // something moved at 3 s
        loop.advanceTime(by: .seconds(3))
        #expect(!fired)  // 6 s: 3 s after the activity
        loop.advanceTime(by: .seconds(2))
        #expect(fired)  // by 8 s: within 4–5 s of it
        #expect(IdleWatch(timeout: .zero, eventLoop: loop, activity: { 0 }, onIdle: {}) == nil)
    }
}
