import SallyportTestSupport
import NIOCore
import SOCKSProtocol
import Testing

@testable import Sallyport
@testable import SallyportRelay

/// Session counts per server, user and client, and each user's shared buckets.
@Suite(.timeLimit(.minutes(1))) struct SessionLimiterTests {
    @Test func sessionLimiterCountsAndReleases() {
        var limits = Limits()
        limits.maxSessions = 3
        limits.sessionsPerUser = 1
        limits.sessionsPerClient = 2
        let limiter = SessionLimiter()
        let client = ClientNetwork(IPAddress("192.0.2.1"))
        guard case .success(let alice) = limiter.acquire(user: "alice", client: client, limits: limits) else {
            Issue.record("first session refused")
            return
        }
        #expect(limiter.acquire(user: "alice", client: ClientNetwork(IPAddress("192.0.2.9")), limits: limits).refusal == .user(1))
        guard case .success(let anonymous) = limiter.acquire(user: nil, client: client, limits: limits) else {
            Issue.record("second session refused")
            return
        }
        #expect(limiter.acquire(user: nil, client: client, limits: limits).refusal == .client(2))
        guard case .success(let other) = limiter.acquire(user: nil, client: ClientNetwork(IPAddress("192.0.2.2")), limits: limits) else {
            Issue.record("third session refused")
            return
        }
        #expect(limiter.acquire(user: nil, client: ClientNetwork(IPAddress("192.0.2.3")), limits: limits).refusal == .server(3))
        limiter.release(alice)
        limiter.release(anonymous)
        limiter.release(other)
        #expect(limiter.acquire(user: "alice", client: client, limits: limits).refusal == nil)
    }

    @Test func aUsersSessionsShareOneBucketEachWay() throws {
        var limits = Limits()
        limits.bandwidthPerUser = 1 << 20
        let limiter = SessionLimiter()
        let client = ClientNetwork(IPAddress("192.0.2.1"))
        guard case .success(let first) = limiter.acquire(user: "alice", client: client, limits: limits),
            case .success(let second) = limiter.acquire(user: "alice", client: client, limits: limits),
            case .success(let other) = limiter.acquire(user: "bob", client: client, limits: limits)
        else {
            Issue.record("a session was refused")
            return
        }
        let (upload, download) = (try #require(first.upload), try #require(first.download))
        // Both of alice's sessions draw from the same two buckets: one for each direction.
        #expect(second.upload === upload && second.download === download)
        #expect(upload !== download)
        #expect(upload.bytesPerSecond == 1 << 20 && download.bytesPerSecond == 1 << 20)
        // Bob has buckets of his own.
        #expect(other.upload !== upload && other.download !== download)
        // Anonymous sessions are not limited.
        guard case .success(let anonymous) = limiter.acquire(user: nil, client: client, limits: limits) else { return }
        #expect(anonymous.upload == nil && anonymous.download == nil)
    }

    @Test func sessionsPerClientCountsAnIPv6SlashSixtyFourAsOneClient() {
        var limits = Limits()
        limits.sessionsPerClient = 1
        let limiter = SessionLimiter()
        let first = limiter.acquire(user: nil, client: ClientNetwork(IPAddress("2001:db8:1:2::1")), limits: limits)
        #expect(first.refusal == nil)
        // Another address of the same /64 is the same client.
        #expect(limiter.acquire(user: nil, client: ClientNetwork(IPAddress("2001:db8:1:2:ffff::9")), limits: limits).refusal == .client(1))
        #expect(limiter.acquire(user: nil, client: ClientNetwork(IPAddress("2001:db8:1:3::1")), limits: limits).refusal == nil)
        // IPv4 and its mapped form are one client too.
        #expect(limiter.acquire(user: nil, client: ClientNetwork(IPAddress("192.0.2.1")), limits: limits).refusal == nil)
        #expect(limiter.acquire(user: nil, client: ClientNetwork(IPAddress("::ffff:192.0.2.1")), limits: limits).refusal == .client(1))
    }

    @Test func sessionLimiterSharesOneBucketPerUser() {
        var limits = Limits()
        limits.bandwidthPerUser = 1 << 20
        let limiter = SessionLimiter()
        guard case .success(let first) = limiter.acquire(user: "bob", client: ClientNetwork(nil as IPAddress?), limits: limits),
            case .success(let second) = limiter.acquire(user: "bob", client: ClientNetwork(nil as IPAddress?), limits: limits)
        else {
            Issue.record("refused")
            return
        }
        #expect(first.upload === second.upload)
        #expect(first.download === second.download)
        #expect(first.upload !== first.download)
    }
}

extension Result where Failure == SessionLimiter.Refusal {
    var refusal: SessionLimiter.Refusal? {
        if case .failure(let refusal) = self { return refusal }
        return nil
    }
}
