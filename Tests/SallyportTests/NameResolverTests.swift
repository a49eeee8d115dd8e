import SallyportTestSupport
import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SOCKSProtocol
import Testing

@testable import Sallyport

/// A stand-in for the system resolver: each name blocks until the test releases it.
final class GatedLookup: Sendable {
    private let calls = NIOLockedValueBox<[String]>([])
    private let changes = Changes()
    private let gates = NIOLockedValueBox<[String: DispatchSemaphore]>([:])
    let answer: @Sendable (String) -> Result<[IPAddress], NameResolver.LookupFailure>

    init(answer: @escaping @Sendable (String) -> Result<[IPAddress], NameResolver.LookupFailure> = { _ in .success([IPAddress("192.0.2.1")!]) }) {
        self.answer = answer
    }

    var called: [String] { calls.withLockedValue { $0 } }

    func gate(_ name: String) -> DispatchSemaphore {
        gates.withLockedValue { gates in
            if let gate = gates[name] { return gate }
            let gate = DispatchSemaphore(value: 0)
            gates[name] = gate
            return gate
        }
    }

    func release(_ name: String) { gate(name).signal() }

    var lookup: NameResolver.Lookup {
        { [self] name in
            calls.withLockedValue { $0.append(name) }
            changes.notify()
            _ = gate(name).wait(timeout: .now() + 10)
            return answer(name)
        }
    }

    /// Waits (bounded) until `count` lookups have started.
    func waitForCalls(_ count: Int) async -> Bool {
        await changes.wait(timeout: 10) { self.called.count >= count }
    }
}

@Suite(.timeLimit(.minutes(1))) struct NameResolverTests {
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    let alice = ClientNetwork(IPAddress("127.0.0.1"))
    let bob = ClientNetwork(IPAddress("127.0.0.2"))

    func settings(threads: Int = 4, queue: Int = 16, perClient: Int = 8, timeout: TimeAmount = .seconds(60)) -> NameResolver.Settings {
        NameResolver.Settings(threads: threads, queue: queue, perClient: perClient, timeout: timeout)
    }

    @Test func identicalNamesInFlightAreLookedUpOnce() async throws {
        let gated = GatedLookup()
        let resolver = NameResolver(settings: settings(), lookup: gated.lookup)
        let first = resolver.resolve("Example.COM.", client: alice, ticket: nil, on: loop)
        let second = resolver.resolve("example.com", client: bob, ticket: nil, on: loop)
        #expect(await gated.waitForCalls(1))
        gated.release("example.com")
        #expect(try await first.get() == .resolved([IPAddress("192.0.2.1")!]))
        #expect(try await second.get() == .resolved([IPAddress("192.0.2.1")!]))
        #expect(gated.called == ["example.com"])
    }

    @Test func aClientPastItsShareIsRefusedAtOnceWhileOthersAreServed() async throws {
        let gated = GatedLookup()
        let resolver = NameResolver(settings: settings(perClient: 2), lookup: gated.lookup)
        let held = [resolver.resolve("a1", client: alice, ticket: nil, on: loop), resolver.resolve("a2", client: alice, ticket: nil, on: loop)]
        #expect(try await resolver.resolve("a3", client: alice, ticket: nil, on: loop).get() == .overShare)
        let other = resolver.resolve("b1", client: bob, ticket: nil, on: loop)
        gated.release("b1")
        #expect(try await other.get() == .resolved([IPAddress("192.0.2.1")!]))
        // An IPv6 client's share covers its whole /64.
        #expect(ClientNetwork(IPAddress("2001:db8::1")) == ClientNetwork(IPAddress("2001:db8::ffff:2")))
        #expect(ClientNetwork(IPAddress("2001:db8:0:1::1")) != ClientNetwork(IPAddress("2001:db8::1")))
        gated.release("a1")
        gated.release("a2")
        for future in held { _ = try await future.get() }
    }

    @Test func aTimedOutLookupStaysChargedUntilTheSystemResolverReturns() async throws {
        let gated = GatedLookup()
        let resolver = NameResolver(settings: settings(perClient: 1, timeout: .milliseconds(100)), lookup: gated.lookup)
        #expect(try await resolver.resolve("slow", client: alice, ticket: nil, on: loop).get() == .timedOut)
        // Its thread is still taken: the client's share is still used.
        #expect(try await resolver.resolve("next", client: alice, ticket: nil, on: loop).get() == .overShare)
        gated.release("slow")
        for _ in 0..<500 where resolver.load.running > 0 { try? await Task.sleep(for: .milliseconds(10)) }
        let next = resolver.resolve("next", client: alice, ticket: nil, on: loop)
        gated.release("next")
        #expect(try await next.get() == .resolved([IPAddress("192.0.2.1")!]))
    }

    @Test func theQueueIsBounded() async throws {
        let gated = GatedLookup()
        let resolver = NameResolver(settings: settings(threads: 1, queue: 2), lookup: gated.lookup)
        let running = resolver.resolve("r", client: alice, ticket: nil, on: loop)
        #expect(await gated.waitForCalls(1))
        let queued = [resolver.resolve("q1", client: alice, ticket: nil, on: loop), resolver.resolve("q2", client: bob, ticket: nil, on: loop)]
        #expect(try await resolver.resolve("q3", client: bob, ticket: nil, on: loop).get() == .overloaded)
        for name in ["r", "q1", "q2"] { gated.release(name) }
        _ = try await running.get()
        for future in queued { _ = try await future.get() }
    }

    @Test func aQueuedLookupWhoseSessionEndedNeverRuns() async throws {
        let gated = GatedLookup()
        let resolver = NameResolver(settings: settings(threads: 1), lookup: gated.lookup)
        let busy = resolver.resolve("busy", client: bob, ticket: nil, on: loop)
        #expect(await gated.waitForCalls(1))
        let ticket = resolver.makeTicket()
        let dropped = resolver.resolve("gone", client: alice, ticket: ticket, on: loop)
        #expect(resolver.load.queued == 1)
        ticket.cancel()
        #expect(try await dropped.get() == .cancelled)
        #expect(resolver.load.queued == 0)
        gated.release("busy")
        _ = try await busy.get()
        // A later lookup runs; the cancelled one never did.
        let later = resolver.resolve("later", client: bob, ticket: nil, on: loop)
        gated.release("later")
        _ = try await later.get()
        #expect(gated.called == ["busy", "later"])
        // A cancelled ticket takes no new lookups.
        #expect(try await resolver.resolve("again", client: alice, ticket: ticket, on: loop).get() == .cancelled)
    }

    @Test func answersAndFailuresAreCached() async throws {
        let gated = GatedLookup { name in name == "bad" ? .failure(.init(reason: "Name or service not known")) : .success([IPAddress("192.0.2.1")!]) }
        var configured = settings()
        configured.negativeTTL = .seconds(5)
        let clock = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(1_000_000_000))
        let resolver = NameResolver(settings: configured, lookup: gated.lookup, now: { clock.withLockedValue { $0 } })
        gated.release("good")
        gated.release("bad")
        _ = try await resolver.resolve("good", client: alice, ticket: nil, on: loop).get()
        #expect(try await resolver.resolve("bad", client: alice, ticket: nil, on: loop).get() == .failed("Name or service not known"))
        #expect(try await resolver.resolve("GOOD", client: bob, ticket: nil, on: loop).get() == .resolved([IPAddress("192.0.2.1")!]))
        #expect(try await resolver.resolve("bad", client: bob, ticket: nil, on: loop).get() == .failed("Name or service not known"))
        #expect(gated.called == ["good", "bad"])
        // A failure is remembered for the negative TTL only.
        clock.withLockedValue { $0 = $0 + .seconds(6) }
        gated.release("bad")
        _ = try await resolver.resolve("bad", client: bob, ticket: nil, on: loop).get()
        #expect(gated.called == ["good", "bad", "bad"])
    }

    @Test func theSystemResolverReadsTheHostsFile() {
        guard case .success(let addresses) = SystemResolver.lookup("localhost") else {
            Issue.record("localhost did not resolve")
            return
        }
        #expect(addresses.contains { $0.isLoopback })
    }
}
