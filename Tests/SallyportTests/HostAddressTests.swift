import NIOCore
import SOCKSProtocol
import SallyportPolicy
import SallyportTestSupport
import Testing

@testable import Sallyport

/// This host's own addresses, taken again while the server runs: an address that appears later
/// (a DHCP lease, a VPN coming up) is guarded from then on, without a reload.
@Suite(.timeLimit(.minutes(1))) struct HostAddressTests {
    @Test func anAddressThatAppearsLaterIsGuardedForNewSessions() {
        let server = SallyportServer(configuration: ServerConfiguration(), logger: LogCapture().logger())
        let address = IPAddress("203.0.113.77")!
        let allowed = {
            guard case .allow = server.generation.withLockedValue({ $0.listeners[0].services.egress.compiled })
                .checkAddresses([address], name: nil, port: 80, command: .connect, subject: PolicySubject(user: nil))
            else { return false }
            return true
        }
        #expect(allowed(), "a public address, before it is this host's")
        server.takeHostAddresses(server.generation.withLockedValue { $0.services.egress.compiled.policy.hostAddresses }.union([address]))
        #expect(!allowed(), "this host's own address now")
        #expect(server.generation.withLockedValue { $0.services.egress.compiled.policy.hostAddresses.contains(address) })
    }
}
