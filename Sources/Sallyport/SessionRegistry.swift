import NIOConcurrencyHelpers
import NIOCore

/// The sessions alive right now, so that shutdown can wait for them and then close them.
final class SessionRegistry: Sendable {
    private let sessions = NIOLockedValueBox<[UInt64: NIOLoopBound<SOCKSServerHandler>]>([:])
    private let nextID = NIOLockedValueBox<UInt64>(0)

    /// A fresh number for a session, unique in this process.
    func makeID() -> UInt64 {
        nextID.withLockedValue { value in
            value += 1
            return value
        }
    }

    func add(_ id: UInt64, _ handler: NIOLoopBound<SOCKSServerHandler>) {
        sessions.withLockedValue { $0[id] = handler }
    }

    func remove(_ id: UInt64) {
        sessions.withLockedValue { _ = $0.removeValue(forKey: id) }
    }

    var count: Int { sessions.withLockedValue { $0.count } }

    /// Asks every live session to close, each on its own event loop.
    func closeAll() {
        for handler in sessions.withLockedValue({ Array($0.values) }) {
            handler.eventLoop.execute { handler.value.closeForShutdown() }
        }
    }
}
