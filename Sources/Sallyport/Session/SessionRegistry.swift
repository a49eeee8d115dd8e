import NIOConcurrencyHelpers
import NIOCore

/// The sessions alive right now, so that shutdown can wait for them and then close them.
final class SessionRegistry: Sendable {
    private struct State {
        var sessions: [UInt64: NIOLoopBound<Session>] = [:]
        /// The most sessions alive at once since `takePeak()` last asked.
        var peak = 0
        /// Told when the last session ends.
        var drainWaiters: [EventLoopPromise<Void>] = []
    }

    private let state = NIOLockedValueBox(State())
    private let nextID = NIOLockedValueBox<UInt64>(0)

    /// A fresh number for a session, unique in this process.
    func makeID() -> UInt64 {
        nextID.withLockedValue { value in
            value += 1
            return value
        }
    }

    func add(_ id: UInt64, _ session: NIOLoopBound<Session>) {
        state.withLockedValue { state in
            state.sessions[id] = session
            state.peak = max(state.peak, state.sessions.count)
        }
    }

    func remove(_ id: UInt64) {
        let drained = state.withLockedValue { state -> [EventLoopPromise<Void>] in
            _ = state.sessions.removeValue(forKey: id)
            guard state.sessions.isEmpty, !state.drainWaiters.isEmpty else { return [] }
            defer { state.drainWaiters = [] }
            return state.drainWaiters
        }
        for waiter in drained { waiter.succeed() }
    }

    /// Succeeds once no session is alive: at once when none is, else when the last one ends.
    func drained(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        state.withLockedValue { state in
            if state.sessions.isEmpty { return eventLoop.makeSucceededVoidFuture() }
            let promise = eventLoop.makePromise(of: Void.self)
            state.drainWaiters.append(promise)
            return promise.futureResult
        }
    }

    var count: Int { state.withLockedValue { $0.sessions.count } }

    /// Every live session, each bound to its event loop.
    func all() -> [NIOLoopBound<Session>] { state.withLockedValue { Array($0.sessions.values) } }

    func find(_ id: UInt64) -> NIOLoopBound<Session>? { state.withLockedValue { $0.sessions[id] } }

    /// The peak since the last call and the count now; the peak starts again from the count.
    func takePeak() -> (peak: Int, now: Int) {
        state.withLockedValue { state in
            let result = (state.peak, state.sessions.count)
            state.peak = state.sessions.count
            return result
        }
    }

    /// Asks every live session to close, each on its own event loop.
    func closeAll() {
        for session in all() {
            session.eventLoop.execute { session.value.closeForShutdown() }
        }
    }
}
