import NIOCore
import NIOEmbedded
import Testing

@testable import SallyportRelay

/// Records the tokens it is told about, and may act on the wheel when told.
private final class Recorder: TimerWheelClient {
    var fired: [Int] = []
    var onFire: ((Int) -> Void)?

    func deadlineReached(_ token: Int) {
        fired.append(token)
        onFire?(token)
    }
}

/// The per-loop timer wheel on an embedded event loop's clock.
@Suite(.timeLimit(.minutes(1))) struct TimerWheelTests {
    @Test func aDeadlineFiresAtTheFirstTickAtOrAfterIt() {
        let loop = EmbeddedEventLoop()
        let wheel = TimerWheel(eventLoop: loop, tick: .milliseconds(100))
        let client = Recorder()
        wheel.schedule(at: loop.now + .milliseconds(250), for: client, token: 1)
        wheel.schedule(at: loop.now + .milliseconds(300), for: client, token: 2)
        loop.advanceTime(by: .milliseconds(200))
        #expect(client.fired.isEmpty)
        loop.advanceTime(by: .milliseconds(100))
        #expect(client.fired == [1, 2], "both are due at the 300 ms tick")
        #expect(wheel.count == 0)
    }

    @Test func aCancelledDeadlineNeverFiresAndAStaleHandleCancelsNothing() {
        let loop = EmbeddedEventLoop()
        let wheel = TimerWheel(eventLoop: loop, tick: .milliseconds(100))
        let client = Recorder()
        let first = wheel.schedule(at: loop.now + .milliseconds(100), for: client, token: 1)
        wheel.cancel(first)
        // The slot is reused; the old handle must not cancel its new deadline.
        wheel.schedule(at: loop.now + .milliseconds(100), for: client, token: 2)
        wheel.cancel(first)
        loop.advanceTime(by: .milliseconds(100))
        #expect(client.fired == [2])
        #expect(wheel.slots == 1)
    }

    @Test func aClientMayCancelAnotherDueDeadlineOrSetANewOneWhenTold() {
        let loop = EmbeddedEventLoop()
        let wheel = TimerWheel(eventLoop: loop, tick: .milliseconds(100))
        let client = Recorder()
        wheel.schedule(at: loop.now + .milliseconds(50), for: client, token: 1)
        let second = wheel.schedule(at: loop.now + .milliseconds(60), for: client, token: 2)
        client.onFire = { token in
            guard token == 1 else { return }
            wheel.cancel(second)
            wheel.schedule(at: loop.now + .milliseconds(100), for: client, token: 3)
        }
        loop.advanceTime(by: .milliseconds(100))
        #expect(client.fired == [1], "the second was cancelled by the first's client")
        loop.advanceTime(by: .milliseconds(100))
        #expect(client.fired == [1, 3])
    }

    @Test func slotsAreReusedSoTheWheelGrowsOnlyToTheMostDeadlinesAtOnce() {
        let loop = EmbeddedEventLoop()
        let wheel = TimerWheel(eventLoop: loop, tick: .milliseconds(100))
        let client = Recorder()
        for round in 0..<50 {
            let handles = (0..<20).map { wheel.schedule(at: loop.now + .seconds(10), for: client, token: round * 100 + $0) }
            handles.forEach(wheel.cancel)
        }
        #expect(wheel.slots == 20)
        #expect(wheel.count == 0)
        loop.advanceTime(by: .seconds(11))
        #expect(client.fired.isEmpty)
    }

    @Test func theWheelsOfALoopAreOneAndOfTwoLoopsTwo() {
        let wheels = TimerWheels()
        let (a, b) = (EmbeddedEventLoop(), EmbeddedEventLoop())
        #expect(wheels.wheel(on: a) === wheels.wheel(on: a))
        #expect(wheels.wheel(on: a) !== wheels.wheel(on: b))
    }
}
