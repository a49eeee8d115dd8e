import NIOCore
import Testing

@testable import SOCKSProtocol

/// The client side of SOCKS5 towards an upstream, fed the way a network delivers bytes.
@Suite(.timeLimit(.minutes(1))) struct SOCKS5ClientHandshakeTests {
    static let destination = SOCKSEndpoint(host: .domain("example.com"), port: 443)

    /// Feeds `answers` one byte at a time; the bytes sent and the last step.
    func run(_ handshake: inout SOCKS5ClientHandshake, _ answers: [UInt8]) -> (sent: [UInt8], last: SOCKS5ClientHandshake.Step?, left: [UInt8]) {
        var sent = Array(handshake.greeting().readableBytesView)
        var buffer = ByteBuffer()
        var last: SOCKS5ClientHandshake.Step?
        for byte in answers {
            buffer.writeInteger(byte)
            while true {
                let step = handshake.process(&buffer)
                last = step
                if case .send(let bytes) = step {
                    sent += Array(bytes.readableBytesView)
                    continue
                }
                break
            }
            if case .established = last! { break }
            if case .failed = last! { break }
        }
        return (sent, last, Array(buffer.readableBytesView))
    }

    @Test func withoutCredentialsTheRequestFollowsMethodNone() {
        var handshake = SOCKS5ClientHandshake(destination: Self.destination)
        let reply: [UInt8] = [5, 0, 0, 1, 10, 0, 0, 1, 0x1F, 0x90]
        let (sent, last, left) = run(&handshake, [5, 0] + reply + Array("hi".utf8))
        #expect(sent == [5, 1, 0] + [5, 1, 0, 3, 11] + Array("example.com".utf8) + [1, 187])
        #expect(last == .established(bound: SOCKSEndpoint(host: .ipv4(.init(10, 0, 0, 1)), port: 8080)))
        #expect(left.isEmpty, "byte by byte, it stops at the end of the reply")
        // In one piece with the target's first bytes: those stay in the buffer for the relay.
        var whole = SOCKS5ClientHandshake(destination: Self.destination)
        var buffer = ByteBuffer(bytes: [5, 0])
        guard case .send = whole.process(&buffer) else {
            Issue.record("no request after method none")
            return
        }
        buffer.writeBytes(reply + Array("hi".utf8))
        #expect(whole.process(&buffer) == .established(bound: SOCKSEndpoint(host: .ipv4(.init(10, 0, 0, 1)), port: 8080)))
        #expect(String(buffer: buffer) == "hi")
    }

    @Test func credentialsGoThroughRFC1929() {
        var handshake = SOCKS5ClientHandshake(destination: Self.destination, username: "alice", password: "pw")
        let (sent, last, _) = run(&handshake, [5, 2, 1, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(Array(sent.prefix(4)) == [5, 2, 0, 2])
        #expect(Array(sent[4..<14]) == [1, 5] + Array("alice".utf8) + [2] + Array("pw".utf8))
        #expect(last == .established(bound: SOCKSEndpoint(host: .ipv4(.init(0, 0, 0, 0)), port: 0)))
    }

    @Test(arguments: [
        ([5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0] as [UInt8], SOCKSReplyCode.connectionRefused),  // its CONNECT refused: its code
        ([5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0], .notAllowed),
        ([5, 0xFF], .generalFailure),  // no method in common
        ([5, 2, 1, 1], .generalFailure),  // the login refused
        ([4, 0], .generalFailure),  // not SOCKS5
    ])
    func refusalsComeBackAsReplyCodes(answers: [UInt8], code: SOCKSReplyCode) {
        var handshake = SOCKS5ClientHandshake(destination: Self.destination, username: "alice", password: "pw")
        let (_, last, _) = run(&handshake, answers)
        guard case .failed(let got, _) = last else {
            Issue.record("\(String(describing: last))")
            return
        }
        #expect(got == code)
    }
}
