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

/// A suite trait: every server a test of the suite starts (proxies, echo targets) is stopped when
/// that test ends, even when it throws before its own `stop()` calls.
struct StopsItsServers: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard testCase != nil else {
            try await function()
            return
        }
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

extension Trait where Self == StopsItsServers {
    static var stopsItsServers: Self { StopsItsServers() }
}
