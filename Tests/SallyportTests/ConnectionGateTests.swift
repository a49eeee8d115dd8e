import NIOCore
import SOCKSProtocol
import Testing

@testable import Sallyport

/// Connections per client from accept: the count, the refusals and their log lines on an injected clock.
@Suite(.timeLimit(.minutes(1))) struct ConnectionGateTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let alice = ClientNetwork(IPAddress("192.0.2.1"))
    let bob = ClientNetwork(IPAddress("192.0.2.2"))

    @Test func aClientIsAdmittedUpToItsLimitAndAgainOnceOneLeaves() {
        let gate = ConnectionGate()
        for _ in 0..<3 { #expect(gate.admit(alice, limit: 3, now: start) == .admitted) }
        #expect(gate.admit(alice, limit: 3, now: start) != .admitted)
        #expect(gate.admit(bob, limit: 3, now: start) == .admitted, "another client has its own count")
        gate.leave(alice)
        #expect(gate.admit(alice, limit: 3, now: start) == .admitted)
    }

    @Test func refusalsMakeOneLinePerIntervalCarryingTheCount() {
        let gate = ConnectionGate(interval: .seconds(10))
        #expect(gate.admit(alice, limit: 1, now: start) == .admitted)
        #expect(gate.admit(alice, limit: 1, now: start) == .refused(logLine: (1, alice)))
        for second in 1...9 { #expect(gate.admit(alice, limit: 1, now: start + .seconds(Int64(second))) == .refused(logLine: nil)) }
        #expect(gate.admit(alice, limit: 1, now: start + .seconds(10)) == .refused(logLine: (10, alice)))
    }

    @Test func anIPv6ClientIsItsSlash64AndLimitZeroAdmitsAll() {
        let gate = ConnectionGate()
        #expect(gate.admit(ClientNetwork(IPAddress("2001:db8::1")), limit: 1, now: start) == .admitted)
        #expect(gate.admit(ClientNetwork(IPAddress("2001:db8::2")), limit: 1, now: start) != .admitted)
        for _ in 0..<1000 { #expect(gate.admit(bob, limit: 0, now: start) == .admitted) }
        #expect(gate.clients == 2)
    }
}
