import NIOCore
import Testing

@testable import SallyportAuth

@Suite(.timeLimit(.minutes(1))) struct LoginThrottleTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    let configuration = LoginThrottle.Configuration(maxFailures: 3, window: .seconds(60), backoff: .seconds(10), maxBackoff: .seconds(35))

    /// One check from `client` for `user` that fails; returns the block it started.
    func fail(_ throttle: inout LoginThrottle, _ client: String, _ user: String = "bob", at now: NIODeadline) -> TimeAmount? {
        guard throttle.begin(client, now: now) == .allowed else { return nil }
        return throttle.finish(client, user: user, outcome: .failure, now: now)
    }

    @Test func blocksAfterMaxFailuresWithinTheWindow() {
        var throttle = LoginThrottle(configuration: configuration)
        #expect(fail(&throttle, "1.2.3.4", at: start) == nil)
        #expect(fail(&throttle, "1.2.3.4", at: start + .seconds(1)) == nil)
        #expect(fail(&throttle, "1.2.3.4", at: start + .seconds(2)) == .seconds(10))
        #expect(throttle.begin("1.2.3.4", now: start + .seconds(3)) == .blocked(until: start + .seconds(12)))
        // Other clients are not affected.
        #expect(throttle.begin("1.2.3.5", now: start + .seconds(3)) == .allowed)
        // The block ends.
        #expect(throttle.begin("1.2.3.4", now: start + .seconds(12)) == .allowed)
    }

    @Test func failuresOutsideTheWindowDoNotAddUp() {
        var throttle = LoginThrottle(configuration: configuration)
        _ = fail(&throttle, "a", at: start)
        _ = fail(&throttle, "a", at: start + .seconds(30))
        #expect(fail(&throttle, "a", at: start + .seconds(91)) == nil)
        #expect(throttle.begin("a", now: start + .seconds(92)) == .allowed)
    }

    @Test func eachBlockDoublesUpToTheMaximum() throws {
        var throttle = LoginThrottle(configuration: configuration)
        var now = start
        var blocks: [TimeAmount] = []
        for _ in 0..<4 {
            for _ in 0..<2 { _ = fail(&throttle, "a", at: now) }
            let block = try #require(fail(&throttle, "a", at: now), "the third failure blocks")
            blocks.append(block)
            now = now + block + .seconds(1)
        }
        #expect(blocks == [.seconds(10), .seconds(20), .seconds(35), .seconds(35)])
    }

    @Test func aSuccessClearsOnlyTheFailuresOfItsOwnName() {
        var throttle = LoginThrottle(configuration: configuration)
        // Two wrong passwords for bob, then a good login as alice from the same address.
        _ = fail(&throttle, "a", "bob", at: start)
        _ = fail(&throttle, "a", "bob", at: start)
        #expect(throttle.begin("a", now: start) == .allowed)
        throttle.finish("a", user: "alice", outcome: .success, now: start)
        // bob's failures still count: the next one blocks the address.
        #expect(fail(&throttle, "a", "bob", at: start) == .seconds(10))
        // A success for bob himself clears his failures.
        var other = LoginThrottle(configuration: configuration)
        _ = fail(&other, "b", "bob", at: start)
        _ = fail(&other, "b", "bob", at: start)
        _ = other.begin("b", now: start)
        other.finish("b", user: "bob", outcome: .success, now: start)
        #expect(fail(&other, "b", "bob", at: start) == nil)
    }

    @Test func aSuccessDoesNotResetTheEscalation() {
        var throttle = LoginThrottle(configuration: configuration)
        for _ in 0..<3 { _ = fail(&throttle, "a", at: start) }  // first block: 10 s
        let later = start + .seconds(11)
        _ = throttle.begin("a", now: later)
        throttle.finish("a", user: "alice", outcome: .success, now: later)
        for _ in 0..<2 { _ = fail(&throttle, "a", at: later) }
        #expect(fail(&throttle, "a", at: later) == .seconds(20))
    }

    @Test func checksInFlightCountAgainstTheLimit() {
        var throttle = LoginThrottle(configuration: configuration)
        _ = fail(&throttle, "a", at: start)
        // One failure plus two checks in flight reach the limit of three: a fourth is refused at once.
        #expect(throttle.begin("a", now: start) == .allowed)
        #expect(throttle.begin("a", now: start) == .allowed)
        #expect(throttle.begin("a", now: start) == .busy)
        // Once they are answered (one without a verdict), there is room again.
        throttle.finish("a", user: "bob", outcome: .none, now: start)
        #expect(throttle.begin("a", now: start) == .allowed)
    }

    @Test func aHugeBackoffDoesNotOverflow() {
        let huge = LoginThrottle.Configuration(maxFailures: 1, window: .seconds(60), backoff: .hours(1_000_000), maxBackoff: .hours(2_000_000))
        var throttle = LoginThrottle(configuration: huge)
        var now = start
        for _ in 0..<30 {
            let block = fail(&throttle, "a", at: now)
            #expect(block != nil)
            #expect((block ?? .zero) <= .hours(2_000_000))
            now = now + (block ?? .zero) + .seconds(1)
        }
    }

    @Test func zeroMaxFailuresTurnsItOff() {
        var throttle = LoginThrottle(configuration: .init(maxFailures: 0))
        for _ in 0..<100 { #expect(fail(&throttle, "a", at: start) == nil) }
        #expect(throttle.begin("a", now: start) == .allowed)
    }

    @Test func recordsStayBounded() {
        var throttle = LoginThrottle(configuration: configuration, capacity: 100)
        for index in 0..<1000 { _ = fail(&throttle, "10.0.\(index / 256).\(index % 256)", at: start) }
        #expect(throttle.trackedClients <= 100)
    }

    @Test func aFloodFromManyAddressesEvictsTheOldestAndKeepsTheNewest() {
        var throttle = LoginThrottle(configuration: configuration, capacity: 100)
        // 1,000 clients, one failure each, a millisecond apart: all within the window.
        for index in 0..<1000 {
            _ = fail(&throttle, "10.0.\(index / 256).\(index % 256)", at: start + .milliseconds(Int64(index)))
        }
        #expect(throttle.trackedClients <= 100)
        #expect(throttle.trackedClients >= 80)
        // The latest client's failures were kept: two more block it.
        let latest = "10.0.3.231"
        let now = start + .seconds(1)
        #expect(fail(&throttle, latest, at: now) == nil)
        #expect(fail(&throttle, latest, at: now) == .seconds(10))
    }

    @Test func ipv6ClientsAreKeyedByTheirSlash64() throws {
        let a = try SocketAddress(ipAddress: "2001:db8:1:2::1", port: 1)
        let b = try SocketAddress(ipAddress: "2001:db8:1:2:ffff::9", port: 2)
        let c = try SocketAddress(ipAddress: "2001:db8:1:3::1", port: 1)
        #expect(LoginThrottle.key(for: a) == LoginThrottle.key(for: b))
        #expect(LoginThrottle.key(for: a) != LoginThrottle.key(for: c))
        #expect(LoginThrottle.key(for: try SocketAddress(ipAddress: "::ffff:192.0.2.1", port: 1)) == "192.0.2.1")
        #expect(LoginThrottle.key(for: try SocketAddress(ipAddress: "192.0.2.1", port: 1)) == "192.0.2.1")
    }
}
