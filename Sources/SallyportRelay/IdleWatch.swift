import NIOCore

/// Ends a relay after a quiet spell without any work per byte: every quarter of the timeout it
/// compares a count of activity with its last look, and four quiet looks in a row (so between 1 and
/// 1.25 × the timeout after the last activity) call `onIdle`. Lives on one event loop.
/// With a `TimerWheel`, the looks cost no scheduled task each (up to one tick later each).
final class IdleWatch: TimerWheelClient {
    private static let looksPerTimeout: Int64 = 4
    private let eventLoop: any EventLoop
    private let wheel: TimerWheel?
    private let interval: TimeAmount
    private let activity: () -> UInt64
    private let onIdle: () -> Void
    private var timer: Scheduled<Void>?
    private var handle: TimerWheel.Handle?
    private var quietLooks = 0
    private var lastActivity: UInt64 = 0

    /// Nil when there is no timeout (nil or zero).
    init?(
        timeout: TimeAmount?, eventLoop: any EventLoop, wheel: TimerWheel? = nil, activity: @escaping () -> UInt64, onIdle: @escaping () -> Void
    ) {
        guard let timeout, timeout > .zero else { return nil }
        self.eventLoop = eventLoop
        self.wheel = wheel
        self.interval = .nanoseconds(max(timeout.nanoseconds / Self.looksPerTimeout, 1))
        self.activity = activity
        self.onIdle = onIdle
    }

    func start() {
        if let wheel {
            handle = wheel.schedule(at: eventLoop.now + interval, for: self)
        } else {
            timer = eventLoop.assumeIsolated().scheduleTask(in: interval) { [weak self] in self?.look() }
        }
    }

    func stop() {
        timer?.cancel()
        timer = nil
        if let handle { wheel?.cancel(handle) }
        handle = nil
    }

    func deadlineReached(_ token: Int) {
        handle = nil
        look()
    }

    private func look() {
        timer = nil
        let current = activity()
        if current == lastActivity {
            quietLooks += 1
        } else {
            quietLooks = 0
            lastActivity = current
        }
        if quietLooks >= Int(Self.looksPerTimeout) {
            onIdle()
        } else {
            start()
        }
    }
}
