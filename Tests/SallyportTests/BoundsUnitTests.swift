import NIOCore
import NIOEmbedded
import SOCKSProtocol
import Testing

@testable import Sallyport
@testable import SallyportRelay

/// The small parts that keep what a client costs bounded, each without sockets or wall-clock waits.
@Suite struct BoundsUnitTests {
    @Test func lruTableForgetsTheLeastRecentlyUsed() {
        var table = LRUTable<Int, String>(capacity: 3)
        #expect(table.set(1, "a") == nil)
        table.set(2, "b")
        table.set(3, "c")
        #expect(table.use(1) == "a")  // 2 is now the oldest
        let evicted = table.set(4, "d")
        #expect(evicted?.key == 2)
        #expect(table.count == 3)
        #expect(table.peek(2) == nil)
        #expect(table.values == ["d", "a", "c"])
        #expect(table.remove(1) == "a")
        #expect(table.removeOldest()?.key == 3)
        table.set(5, "e")
        table.set(6, "f")
        #expect(table.values == ["f", "e", "d"])
        // Many keys through a small table: the count never passes the capacity.
        for key in 0..<10_000 { table.set(key, "\(key)") }
        #expect(table.count == 3)
        #expect(table.values == ["9999", "9998", "9997"])
    }

    @Test func rateLimiterRefillsAtItsRateOnAnInjectedClock() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let limiter = RateLimiter(bytesPerSecond: 1_000_000, now: start)
        // A burst of a tenth of a second's worth is free; past it the reader waits for the debt.
        #expect(limiter.consume(100_000, now: start) == .zero)
        #expect(limiter.consume(50_000, now: start) == .milliseconds(50))
        // 50 ms later the debt is paid; 100 ms more refills 100,000 bytes.
        #expect(limiter.consume(0, now: start + .milliseconds(50)) == .zero)
        #expect(limiter.consume(100_000, now: start + .milliseconds(150)) == .zero)
        // The bucket never holds more than its burst, however long it rested.
        #expect(limiter.consume(200_000, now: start + .seconds(60)) == .milliseconds(100))
    }

    @Test func rateLimiterIsSharedByBothItsUsers() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let shared = RateLimiter(bytesPerSecond: 1_000_000, now: start)
        #expect(shared.consume(60_000, now: start) == .zero)
        // A second session of the same user takes from the same bucket.
        #expect(shared.consume(60_000, now: start) == .milliseconds(20))
        shared.setRate(bytesPerSecond: 2_000_000)
        #expect(shared.bytesPerSecond == 2_000_000)
    }

    @Test func droppedDatagramsTakeNoTokensAndDebtHasAFloor() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let bucket = RateLimiter(bytesPerSecond: 100_000, now: start)
        // A datagram flood: what does not fit is refused and costs nothing.
        #expect(bucket.take(16_384, now: start))
        for _ in 0..<10_000 { #expect(!bucket.take(1_000, now: start)) }
        // So the user's TCP reads wait only for their own bytes.
        #expect(bucket.consume(1_000, now: start) == .milliseconds(10))
        // A huge read owes at most ten seconds, and the wait is computed without trapping.
        #expect(bucket.consume(Int.max / 2, now: start) == .seconds(10))
        #expect(RateLimiter.wait(for: .infinity, rate: 1) == .seconds(10))
        #expect(RateLimiter.wait(for: 1e300, rate: 1e-300) == .seconds(10))
    }

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

    @Test func idleWatchFiresBetweenOneAndOneAndAQuarterTimeoutsAfterTheLastActivity() {
        let loop = EmbeddedEventLoop()
        var activity: UInt64 = 0
        var fired = false
        let watch = IdleWatch(timeout: .seconds(4), eventLoop: loop, activity: { activity }, onIdle: { fired = true })
        watch?.start()
        loop.advanceTime(by: .seconds(3))
        activity += 1  // something moved at 3 s
        loop.advanceTime(by: .seconds(3))
        #expect(!fired)  // 6 s: 3 s after the activity
        loop.advanceTime(by: .seconds(2))
        #expect(fired)  // by 8 s: within 4–5 s of it
        #expect(IdleWatch(timeout: .zero, eventLoop: loop, activity: { 0 }, onIdle: {}) == nil)
    }

    @Test func refusalNoticeWritesAtMostOneLinePerInterval() {
        let logs = LogCapture()
        var notice = RefusalNotice(logger: logs.logger(), interval: .seconds(10))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let destination = SOCKSEndpoint(host: .ipv4(SOCKSIPv4Address(10, 0, 0, 1)), port: 53)
        for index in 0..<1000 {
            notice.refused(
                "udp destinations refused", destination, reason: "guard:10.0.0.0/8", command: .udpAssociate, session: "1", user: nil, client: "c",
                now: start + .milliseconds(Int64(index)))
        }
        #expect(logs.lines.count == 1)
        notice.refused("udp destinations refused", destination, reason: "r", command: .udpAssociate, session: "1", user: nil, client: "c", now: start + .seconds(11))
        #expect(logs.lines.count == 2)
        #expect(logfmtFields(logs.lines.last ?? "")["refused"] == "1000")
    }
}

extension Result where Failure == SessionLimiter.Refusal {
    var refusal: SessionLimiter.Refusal? {
        if case .failure(let refusal) = self { return refusal }
        return nil
    }
}
