import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import Sallyport

/// The grace period of a shutdown: the registry's drained signal against one timer, on a testing
/// event loop's clock (nothing waits in real time).
@Suite(.timeLimit(.minutes(1))) struct ShutdownDrainTests {
    /// Whether `future` has completed, and with what.
    static func outcome(_ future: EventLoopFuture<Bool>) -> NIOLockedValueBox<Bool?> {
        let seen = NIOLockedValueBox<Bool?>(nil)
        future.whenSuccess { drained in seen.withLockedValue { $0 = drained } }
        return seen
    }

    @Test func theLastSessionEndingEndsTheWaitBeforeTheGrace() async throws {
        let harness = try SessionHarness()
        let loop = NIOAsyncTestingEventLoop()
        #expect(harness.registry.count == 1)
        let waiting = ShutdownDrain.drain(harness.registry, grace: .seconds(30), on: loop)
        let seen = Self.outcome(waiting)
        await loop.advanceTime(by: .seconds(29))
        #expect(seen.withLockedValue { $0 } == nil, "still waiting for the session")
        harness.close()
        #expect(try await waiting.get() == true)
        await loop.shutdownGracefully()
    }

    @Test func aSessionOutlivingTheGraceEndsTheWaitAtTheGraceExactly() async throws {
        let harness = try SessionHarness()
        defer { harness.close() }
        let loop = NIOAsyncTestingEventLoop()
        let waiting = ShutdownDrain.drain(harness.registry, grace: .milliseconds(1500), on: loop)
        let seen = Self.outcome(waiting)
        await loop.advanceTime(by: .milliseconds(1499))
        #expect(seen.withLockedValue { $0 } == nil)
        await loop.advanceTime(by: .milliseconds(1))
        #expect(try await waiting.get() == false)
        await loop.shutdownGracefully()
    }

    @Test func noSessionsNeedNoWaitAndAZeroGraceNone() async throws {
        let loop = NIOAsyncTestingEventLoop()
        #expect(try await ShutdownDrain.drain(SessionRegistry(), grace: .seconds(10), on: loop).get() == true)
        let harness = try SessionHarness()
        defer { harness.close() }
        let zero = ShutdownDrain.drain(harness.registry, grace: .zero, on: loop)
        await loop.run()
        #expect(try await zero.get() == false)
        await loop.shutdownGracefully()
    }
}
