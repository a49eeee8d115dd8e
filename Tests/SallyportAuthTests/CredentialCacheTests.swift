import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SOCKSProtocol
import Testing

@testable import SallyportAuth

/// Counts checks; accepts the password "right".
final class CountingAuthenticator: Authenticator {
    let calls = NIOLockedValueBox(0)

    func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        calls.withLockedValue { $0 += 1 }
        let ok = request.password == Password("right")
        return eventLoop.makeSucceededFuture(ok ? .success(Identity(user: request.username, groups: ["g"])) : .failure(reason: "wrong"))
    }
}

/// Answers with a closure.
struct ClosureAuthenticator: Authenticator {
    let body: @Sendable (AuthenticationRequest) -> EventLoopFuture<AuthenticationResult>

    init(_ body: @escaping @Sendable (AuthenticationRequest) -> EventLoopFuture<AuthenticationResult>) { self.body = body }

    func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> { body(request) }
}

@Suite(.timeLimit(.minutes(1))) struct CredentialCacheTests {
    let eventLoop = MultiThreadedEventLoopGroup.singleton.next()

    func login(_ cache: CachingAuthenticator, _ user: String, _ password: String, from client: String = "192.0.2.1") async throws
        -> AuthenticationResult
    {
        let address = try SocketAddress(ipAddress: client, port: 40_000)
        return try await cache.authenticate(AuthenticationRequest(username: user, password: Array(password.utf8), client: address), on: eventLoop).get()
    }

    @Test func sipHashMatchesTheReferenceVector() {
        // From the SipHash paper: key 00..0f, message 00..0e.
        let key = SipHash24.Key(k0: 0x0706_0504_0302_0100, k1: 0x0f0e_0d0c_0b0a_0908)
        #expect(SipHash24.hash(Array(0..<15), key: key) == 0xa129_ca61_49be_45e5)
        #expect(SipHash24.hash([], key: key) == 0x726f_db47_dd0e_0e31)
    }

    @Test func aRepeatedLoginCostsOneCheck() async throws {
        let base = CountingAuthenticator()
        let cache = CachingAuthenticator(base: base, lifetime: .hours(1))
        for _ in 0..<50 { #expect(try await login(cache, "alice", "right") == .success(Identity(user: "alice", groups: ["g"]))) }
        #expect(base.calls.withLockedValue { $0 } == 1)
    }

    @Test func aDifferentPasswordIsCheckedAndFailuresAreNotCached() async throws {
        let base = CountingAuthenticator()
        let cache = CachingAuthenticator(base: base, lifetime: .hours(1))
        _ = try await login(cache, "alice", "right")
        #expect(try await login(cache, "alice", "wrong") == .failure(reason: "wrong"))
        #expect(try await login(cache, "alice", "wrong") == .failure(reason: "wrong"))
        #expect(base.calls.withLockedValue { $0 } == 3)
        // Another user with the same password is a different entry.
        _ = try await login(cache, "bob", "right")
        #expect(base.calls.withLockedValue { $0 } == 4)
    }

    @Test func entriesExpireAndClearEmptiesTheCache() async throws {
        let base = CountingAuthenticator()
        let clock = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(1_000_000_000))
        let cache = CachingAuthenticator(base: base, lifetime: .milliseconds(100), now: { clock.withLockedValue { $0 } })
        _ = try await login(cache, "alice", "right")
        clock.withLockedValue { $0 = $0 + .milliseconds(99) }
        _ = try await login(cache, "alice", "right")
        #expect(base.calls.withLockedValue { $0 } == 1, "still fresh 99 ms after")
        clock.withLockedValue { $0 = $0 + .milliseconds(2) }
        _ = try await login(cache, "alice", "right")
        #expect(base.calls.withLockedValue { $0 } == 2, "expired 101 ms after")
        cache.clear()
        _ = try await login(cache, "alice", "right")
        #expect(base.calls.withLockedValue { $0 } == 3)
    }

    @Test func anEntryIsForTheAddressItWasMadeFrom() async throws {
        let base = CountingAuthenticator()
        let cache = CachingAuthenticator(base: base, lifetime: .hours(1))
        _ = try await login(cache, "alice", "right", from: "192.0.2.1")
        _ = try await login(cache, "alice", "right", from: "192.0.2.1")
        #expect(base.calls.withLockedValue { $0 } == 1)
        // From another address, PAM (and its address rules) is asked again.
        _ = try await login(cache, "alice", "right", from: "198.51.100.2")
        #expect(base.calls.withLockedValue { $0 } == 2)
    }

    @Test func identicalChecksInFlightAreMerged() async throws {
        let gate = NIOLockedValueBox<EventLoopPromise<AuthenticationResult>?>(nil)
        let calls = NIOLockedValueBox(0)
        let eventLoop = self.eventLoop
        let slow = ClosureAuthenticator { _ in
            calls.withLockedValue { $0 += 1 }
            let promise = eventLoop.makePromise(of: AuthenticationResult.self)
            gate.withLockedValue { $0 = promise }
            return promise.futureResult
        }
        // Even with the cache off: a burst of one credential costs one check.
        let cache = CachingAuthenticator(base: slow, lifetime: .zero)
        let request = AuthenticationRequest(username: "alice", password: Array("right".utf8), client: try SocketAddress(ipAddress: "192.0.2.1", port: 1))
        let answers = (0..<20).map { _ in cache.authenticate(request, on: eventLoop) }
        #expect(calls.withLockedValue { $0 } == 1)
        gate.withLockedValue { $0 }?.succeed(.success(Identity(user: "alice")))
        for answer in answers { #expect(try await answer.get() == .success(Identity(user: "alice"))) }
        // Once answered, a new login is a new check.
        _ = cache.authenticate(request, on: eventLoop)
        #expect(calls.withLockedValue { $0 } == 2)
        gate.withLockedValue { $0 }?.succeed(.failure(reason: "done"))
    }

    @Test func zeroLifetimeTurnsTheCacheOff() async throws {
        let base = CountingAuthenticator()
        let cache = CachingAuthenticator(base: base, lifetime: .zero)
        for _ in 0..<3 { _ = try await login(cache, "alice", "right") }
        #expect(base.calls.withLockedValue { $0 } == 3)
        #expect(cache.count == 0)
    }

    @Test func aMergedCheckIsWantedUntilEveryoneWaitingForItHasGone() async throws {
        let asked = NIOLockedValueBox<(@Sendable () -> Bool)?>(nil)
        let answer = eventLoop.makePromise(of: AuthenticationResult.self)
        let cache = CachingAuthenticator(base: ClosureAuthenticator { request in
            asked.withLockedValue { $0 = request.stillWanted }
            return answer.futureResult
        }, lifetime: .hours(1))
        let address = try SocketAddress(ipAddress: "192.0.2.1", port: 40_000)
        let (first, second) = (LoginWaiter(), LoginWaiter())
        let request = { (waiter: LoginWaiter) in
            AuthenticationRequest(username: "alice", password: Array("right".utf8), client: address, stillWanted: { waiter.isWaiting })
        }
        let answers = [first, second].map { cache.authenticate(request($0), on: eventLoop) }
        let stillWanted = try #require(asked.withLockedValue { $0 })
        #expect(stillWanted())
        first.leave()
        #expect(stillWanted(), "the second client still waits")
        second.leave()
        #expect(!stillWanted())
        answer.succeed(.refused(reason: "gone"))
        for future in answers { #expect(try await future.get() == .refused(reason: "gone")) }
    }
}
