import Dispatch
import Foundation
import NIOConcurrencyHelpers

/// Set by `make sanitize`: memory and time bounds are the plain build's, not a sanitizer's.
public let underSanitizer = ProcessInfo.processInfo.environment["SALLYPORT_SANITIZER"] != nil

/// How much longer waits for an event (a process starting, a log line) may take: a sanitized
/// build runs several times slower. Bounds on behaviour that is about time are not scaled.
public let sanitizerSlowdown: Double = underSanitizer ? 4 : 1

/// Wakes the waiters on some state each time it changes; a wait ends when its condition holds or
/// its deadline passes.
public final class Changes: Sendable {
    private struct Waiters {
        var version = 0
        var next = 0
        var waiting: [Int: CheckedContinuation<Void, Never>] = [:]
    }
    private let waiters = NIOLockedValueBox(Waiters())

    public init() {}

    /// Wakes every waiter to check its condition again.
    public func notify() {
        let woken = waiters.withLockedValue { waiters in
            defer { waiters.waiting = [:] }
            waiters.version += 1
            return Array(waiters.waiting.values)
        }
        woken.forEach { $0.resume() }
    }

    /// Waits until `condition` holds, up to `timeout` seconds; returns whether it held.
    public func wait(timeout: Double, until condition: @Sendable () -> Bool) async -> Bool {
        let deadline = DispatchTime.now() + timeout
        while true {
            let seen = waiters.withLockedValue { $0.version }
            if condition() { return true }
            if DispatchTime.now() >= deadline { return false }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // A change since `seen` (between the check and here) wakes it at once.
                let id: Int? = waiters.withLockedValue { waiters in
                    guard waiters.version == seen else { return nil }
                    waiters.next += 1
                    waiters.waiting[waiters.next] = continuation
                    return waiters.next
                }
                guard let id else { return continuation.resume() }
                DispatchQueue.global().asyncAfter(deadline: deadline) { self.wake(id) }
            }
        }
    }

    private func wake(_ id: Int) {
        waiters.withLockedValue { $0.waiting.removeValue(forKey: id) }?.resume()
    }
}

/// The package's root directory, found from this source file's path.
public func packageRoot(file: String = #filePath) -> String {
    var components = file.split(separator: "/", omittingEmptySubsequences: false)
    while let last = components.last, last != "Tests" { components.removeLast() }
    components.removeLast()
    return components.joined(separator: "/")
}
