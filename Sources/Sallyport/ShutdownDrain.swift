import NIOConcurrencyHelpers
import NIOCore

/// The wait of a graceful shutdown: until the registry says its last session has ended, or the
/// grace has passed, whichever comes first. Nothing polls: the registry's drained signal and one
/// timer on `eventLoop` decide.
enum ShutdownDrain {
    /// True when every session ended within `grace`; false when the grace ran out first.
    static func drain(_ registry: SessionRegistry, grace: TimeAmount, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
        let outcome = eventLoop.makePromise(of: Bool.self)
        let settled = NIOLockedValueBox(false)
        let settle: @Sendable (Bool) -> Void = { drained in
            let first = settled.withLockedValue { settled in
                defer { settled = true }
                return !settled
            }
            if first { outcome.succeed(drained) }
        }
        let timer = eventLoop.scheduleTask(in: grace) { settle(false) }
        registry.drained(on: eventLoop).whenSuccess {
            timer.cancel()
            settle(true)
        }
        return outcome.futureResult
    }
}
