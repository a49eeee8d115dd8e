import SallyportTestSupport
import NIOCore
import SOCKSProtocol
import Testing

@testable import Sallyport

/// Refusals a stranger can cause are logged in aggregate, at a bounded rate.
@Suite(.timeLimit(.minutes(1))) struct RefusalNoticeTests {
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
