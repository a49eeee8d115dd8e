import SallyportTestSupport
import Foundation
import NIOConcurrencyHelpers
import Testing

/// The servers one test started, stopped when the test ends, whether it passed, failed or threw.
final class ServerScope: Sendable {
    @TaskLocal static var current: ServerScope?

    private let stops = NIOLockedValueBox<[@Sendable () async -> Void]>([])

    /// Registers how to stop a server started in the current test (a no-op outside a scope).
    static func register(_ stop: @escaping @Sendable () async -> Void) {
        current?.stops.withLockedValue { $0.append(stop) }
    }

    func stopAll() async {
        let all = stops.withLockedValue { stops in
            defer { stops = [] }
            return stops
        }
        for stop in all.reversed() { await stop() }
    }
}

/// The suite trait of every system test:
/// - the test body runs on threads of its own (`BlockingTestExecutor`), never on Swift's
///   cooperative pool, so that a blocking socket read or a process wait stalls no other test;
/// - every server it starts (proxies, targets, programs) is stopped when it ends, even when it
///   throws before its own `stop()` calls;
/// - the run is set up first (`TestRun`: open-file limit, leftovers of killed runs swept).
/// - a test marked `.timing` runs alone: it waits until no other system test runs, and none starts
///   until it ends (`MachineShare`), so that the time it measures is its own.
/// Each suite also carries `.timeLimit`, so a test that hangs fails instead of holding the run.
struct SystemTest: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard testCase != nil else {
            try await function()
            return
        }
        let alone = test.traits.contains { $0 is TimingTest }
        try await MachineShare.shared.withShare(alone: alone) {
            try await withTaskExecutorPreference(BlockingTestExecutor.shared) {
                try await scoped(function)
            }
        }
    }

    private func scoped(_ function: @Sendable () async throws -> Void) async throws {
        TestRun.current.prepare()
        let scope = ServerScope()
        do {
            try await ServerScope.$current.withValue(scope) { try await function() }
        } catch {
            await scope.stopAll()
            throw error
        }
        await scope.stopAll()
    }
}

/// Marks a test whose assertions are about time (a timeout, a rate, a delay): it runs alone.
struct TimingTest: TestTrait {}

extension Trait where Self == TimingTest {
    /// See `TimingTest`.
    static var timing: Self { TimingTest() }
}

/// Shared by the system tests that run side by side, at most `width` at a time (swift-testing
/// starts every test of the run at once: on two cores, 130 tests' servers and clients together
/// starved in-process proxies for minutes); taken whole by a timing test. Tests go in the order
/// they asked, and a waiting timing test before tests that ask after it, so none waits for ever.
final class MachineShare: Sendable {
    static let shared = MachineShare(width: Int(ProcessInfo.processInfo.environment["SALLYPORT_SYSTEM_TEST_WIDTH"] ?? "") ?? 4)

    let width: Int

    init(width: Int) { self.width = max(1, width) }

    private struct State {
        var sharing = 0
        var alone = false
        var waiting: [(alone: Bool, go: CheckedContinuation<Void, Never>)] = []
    }
    private let state = NIOLockedValueBox(State())

    func withShare<T>(alone: Bool, _ body: () async throws -> T) async rethrows -> T {
        await acquire(alone: alone)
        defer { release(alone: alone) }
        return try await body()
    }

    private func acquire(alone: Bool) async {
        await withCheckedContinuation { (go: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { state -> Bool in
                let free = state.waiting.isEmpty && !state.alone && (alone ? state.sharing == 0 : state.sharing < width)
                if free {
                    if alone { state.alone = true } else { state.sharing += 1 }
                } else {
                    state.waiting.append((alone, go))
                }
                return free
            }
            if now { go.resume() }
        }
    }

    private func release(alone: Bool) {
        let ready = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            if alone { state.alone = false } else { state.sharing -= 1 }
            var ready: [CheckedContinuation<Void, Never>] = []
            // In order: shares until the first waiting timing test, which goes once all are done.
            while let first = state.waiting.first, !state.alone {
                if first.alone {
                    guard state.sharing == 0 else { break }
                    state.alone = true
                } else {
                    guard state.sharing < width else { break }
                    state.sharing += 1
                }
                ready.append(first.go)
                state.waiting.removeFirst()
            }
            return ready
        }
        ready.forEach { $0.resume() }
    }
}

extension Trait where Self == SystemTest {
    /// See `SystemTest`.
    static var system: Self { SystemTest() }
}
