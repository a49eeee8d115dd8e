import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import Sallyport

@Suite struct HostResolverTests {
    @Test func localhostResolves() async throws {
        let resolver = HostResolver(threadPool: HostResolver.lookupPool)
        let addresses = try await resolver.resolve(host: "localhost", port: 8080, on: MultiThreadedEventLoopGroup.singleton.next()).get()
        #expect(!addresses.isEmpty)
        #expect(addresses.allSatisfy { $0.port == 8080 })
    }

    @Test func aQueuedLookupWhoseSessionEndedIsNotRun() async throws {
        // One thread, held busy, so that the lookup waits in the queue as it would behind slow names.
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let release = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        pool.submit { _ in
            started.signal()
            release.wait()
        }
        started.wait()
        let resolver = HostResolver(threadPool: pool)
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let cancellation = LookupCancellation()
        let called = resolver.resolve(host: "localhost", port: 80, on: eventLoop, cancellation: cancellation)
        let wanted = resolver.resolve(host: "localhost", port: 80, on: eventLoop, cancellation: LookupCancellation())
        cancellation.cancel()
        release.signal()
        do {
            _ = try await called.get()
            Issue.record("the cancelled lookup ran")
        } catch {
            #expect(error is ResolutionError)
            #expect("\(error)".contains("lookup cancelled"))
        }
        #expect(try await !wanted.get().isEmpty)
        try await pool.shutdownGracefully()
    }
}
