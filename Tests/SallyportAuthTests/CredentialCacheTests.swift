import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import SallyportAuth

/// Counts checks; accepts the password "right".
final class CountingAuthenticator: Authenticator {
    let calls = NIOLockedValueBox(0)

    func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        calls.withLockedValue { $0 += 1 }
        let ok = request.password == Array("right".utf8)
        return eventLoop.makeSucceededFuture(ok ? .success(Identity(user: request.username, groups: ["g"])) : .failure(reason: "wrong"))
    }
}

@Suite struct CredentialCacheTests {
    let eventLoop = MultiThreadedEventLoopGroup.singleton.next()

    func login(_ cache: CachingAuthenticator, _ user: String, _ password: String) async throws -> AuthenticationResult {
        try await cache.authenticate(AuthenticationRequest(username: user, password: Array(password.utf8), client: nil), on: eventLoop).get()
    }

    @Test func sipHashMatchesTheReferenceVector() {
        // From the SipHash paper: key 00..0f, message 00..0e.
        let key = SipHash24.Key(k0: 0x0706_0504_0302_0100, k1: 0x0f0e_0d0c_0b0a_0908)
        #expect(SipHash24.hash(Array(0..<15), key: key) == 0xa129_ca61_49be_45e5)
        #expect(SipHash24.hash([], key: key) == 0x726f_db47_dd0e_0e31)
    }

    @Test func aRepeatedLoginCostsOneCheck() async throws {
        let base = CountingAuthenticator()
        let cache = CachingAuthenticator(base: base, lifetime: .seconds(60))
        for _ in 0..<50 { #expect(try await login(cache, "alice", "right") == .success(Identity(user: "alice", groups: ["g"]))) }
        #expect(base.calls.withLockedValue { $0 } == 1)
    }

    @Test func aDifferentPasswordIsCheckedAndFailuresAreNotCached() async throws {
        let base = CountingAuthenticator()
        let cache = CachingAuthenticator(base: base, lifetime: .seconds(60))
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
        let cache = CachingAuthenticator(base: base, lifetime: .milliseconds(100))
        _ = try await login(cache, "alice", "right")
        try await Task.sleep(for: .milliseconds(150))
        _ = try await login(cache, "alice", "right")
        #expect(base.calls.withLockedValue { $0 } == 2)
        cache.clear()
        _ = try await login(cache, "alice", "right")
        #expect(base.calls.withLockedValue { $0 } == 3)
    }

    @Test func zeroLifetimeTurnsTheCacheOff() async throws {
        let base = CountingAuthenticator()
        let cache = CachingAuthenticator(base: base, lifetime: .zero)
        for _ in 0..<3 { _ = try await login(cache, "alice", "right") }
        #expect(base.calls.withLockedValue { $0 } == 3)
        #expect(cache.count == 0)
    }
}
