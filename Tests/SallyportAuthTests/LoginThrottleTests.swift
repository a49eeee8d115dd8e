import NIOCore
import Testing

@testable import SallyportAuth

@Suite struct LoginThrottleTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    let configuration = LoginThrottle.Configuration(maxFailures: 3, window: .seconds(60), backoff: .seconds(10), maxBackoff: .seconds(35))

    @Test func blocksAfterMaxFailuresWithinTheWindow() {
        var throttle = LoginThrottle(configuration: configuration)
        #expect(throttle.recordFailure("1.2.3.4", now: start) == nil)
        #expect(throttle.recordFailure("1.2.3.4", now: start + .seconds(1)) == nil)
        #expect(throttle.check("1.2.3.4", now: start + .seconds(2)) == .allowed)
        #expect(throttle.recordFailure("1.2.3.4", now: start + .seconds(2)) == .seconds(10))
        #expect(throttle.check("1.2.3.4", now: start + .seconds(3)) == .blocked(until: start + .seconds(12)))
        // Other clients are not affected.
        #expect(throttle.check("1.2.3.5", now: start + .seconds(3)) == .allowed)
        // The block ends.
        #expect(throttle.check("1.2.3.4", now: start + .seconds(12)) == .allowed)
    }

    @Test func failuresOutsideTheWindowDoNotAddUp() {
        var throttle = LoginThrottle(configuration: configuration)
        _ = throttle.recordFailure("a", now: start)
        _ = throttle.recordFailure("a", now: start + .seconds(30))
        #expect(throttle.recordFailure("a", now: start + .seconds(91)) == nil)
        #expect(throttle.check("a", now: start + .seconds(92)) == .allowed)
    }

    @Test func eachBlockDoublesUpToTheMaximum() {
        var throttle = LoginThrottle(configuration: configuration)
        var now = start
        var blocks: [TimeAmount] = []
        for _ in 0..<4 {
            for _ in 0..<2 { _ = throttle.recordFailure("a", now: now) }
            if let block = throttle.recordFailure("a", now: now) { blocks.append(block) }
            now = now + blocks.last! + .seconds(1)
        }
        #expect(blocks == [.seconds(10), .seconds(20), .seconds(35), .seconds(35)])
    }

    @Test func successClearsTheRecord() {
        var throttle = LoginThrottle(configuration: configuration)
        _ = throttle.recordFailure("a", now: start)
        _ = throttle.recordFailure("a", now: start)
        throttle.recordSuccess("a")
        #expect(throttle.recordFailure("a", now: start) == nil)
        #expect(throttle.trackedClients == 1)
    }

    @Test func zeroMaxFailuresTurnsItOff() {
        var throttle = LoginThrottle(configuration: .init(maxFailures: 0))
        for _ in 0..<100 { #expect(throttle.recordFailure("a", now: start) == nil) }
        #expect(throttle.check("a", now: start) == .allowed)
    }

    @Test func recordsStayBounded() {
        var throttle = LoginThrottle(configuration: configuration, capacity: 100)
        for index in 0..<1000 { _ = throttle.recordFailure("10.0.\(index / 256).\(index % 256)", now: start) }
        #expect(throttle.trackedClients <= 100)
    }

    @Test func aFloodFromManyAddressesEvictsTheOldestAndKeepsTheNewest() {
        var throttle = LoginThrottle(configuration: configuration, capacity: 100)
        // 1,000 clients, one failure each, a millisecond apart: all within the window.
        for index in 0..<1000 {
            _ = throttle.recordFailure("10.0.\(index / 256).\(index % 256)", now: start + .milliseconds(Int64(index)))
        }
        #expect(throttle.trackedClients <= 100)
        #expect(throttle.trackedClients >= 80)
        // The latest client's failures were kept: two more block it.
        let latest = "10.0.3.231"
        let now = start + .seconds(1)
        #expect(throttle.recordFailure(latest, now: now) == nil)
        #expect(throttle.recordFailure(latest, now: now) == .seconds(10))
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
