import NIOCore

/// The wait of a graceful shutdown: until no session is left, or the grace has passed, looking
/// every `step`. The clock and the sleep are injected, so the arithmetic is tested without waiting.
struct ShutdownDrain {
    var grace: TimeAmount
    var step: TimeAmount = .milliseconds(50)
    var now: () -> NIODeadline = { .now() }
    var sleep: (TimeAmount) async -> Void = { try? await Task.sleep(for: .nanoseconds($0.nanoseconds)) }

    /// Whether every session ended within the grace; never sleeps past it.
    func wait(sessions: () -> Int) async -> Bool {
        let deadline = now() + grace
        while sessions() > 0 {
            let left = deadline - now()
            guard left > .zero else { return false }
            await sleep(min(step, left))
        }
        return true
    }
}
