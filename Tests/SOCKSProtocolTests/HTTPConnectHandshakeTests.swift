import NIOCore
import Testing

@testable import SOCKSProtocol

/// HTTP CONNECT towards an upstream: the request, and the response head whole or split.
@Suite(.timeLimit(.minutes(1))) struct HTTPConnectHandshakeTests {
    static let destination = SOCKSEndpoint(host: .domain("example.com"), port: 443)

    @Test func base64IsRFC4648sTestVectors() {
        let vectors = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        for (plain, encoded) in vectors { #expect(Base64.encode(Array(plain.utf8)) == encoded) }
        #expect(Base64.encode([0xFF, 0xFE, 0x00]) == "//4A")
    }

    @Test func theRequestCarriesBasicCredentials() {
        let handshake = HTTPConnectHandshake(destination: Self.destination, username: "alice", password: "pw")!
        #expect(String(buffer: handshake.opening())
            == "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n\r\n")
        let anonymous = HTTPConnectHandshake(destination: SOCKSEndpoint(host: .ipv6(.init(high: 0, low: 1)), port: 22), username: nil, password: nil)!
        #expect(String(buffer: anonymous.opening()) == "CONNECT [::1]:22 HTTP/1.1\r\nHost: [::1]:22\r\n\r\n")
    }

    @Test(arguments: ["a.corp.example:80 HTTP/1.1\r\nX-Injected: 1\r\n\r\nCONNECT internal.corp.example", "a b.example", "a\r\n.example", "x\u{0600}.example"])
    func aDestinationThatIsNoDNSNameBuildsNoHead(name: String) {
        #expect(HTTPConnectHandshake(destination: SOCKSEndpoint(host: .domain(name), port: 80), username: "gw", password: "secret") == nil)
    }

    @Test func aUserNameThatWouldEndTheHeadOrSplitTheCredentialsBuildsNoHead() {
        #expect(HTTPConnectHandshake(destination: Self.destination, username: "gw\r\nX: 1", password: "pw") == nil)
        #expect(HTTPConnectHandshake(destination: Self.destination, username: "g:w", password: "pw") == nil)
        let head = HTTPConnectHandshake(destination: Self.destination, username: "gw", password: "p\r\nX-Injected: 1")!.opening()
        #expect(!String(buffer: head).contains("X-Injected"))
    }

    @Test(arguments: [1, 7, 1000])
    func aSuccessKeepsTheTargetsFirstBytes(chunk: Int) {
        var handshake = HTTPConnectHandshake(destination: Self.destination, username: nil, password: nil)!
        let bytes = Array("HTTP/1.1 200 Connection established\r\nVia: test\r\n\r\nSSH-2.0-x\r\n".utf8)
        var buffer = ByteBuffer()
        var step = UpstreamStep.needMoreData
        var index = 0
        while index < bytes.count, step == .needMoreData {
            buffer.writeBytes(bytes[index..<min(index + chunk, bytes.count)])
            index += chunk
            step = handshake.advance(&buffer)
        }
        buffer.writeBytes(bytes[min(index, bytes.count)...])
        #expect(step == .established)
        #expect(String(buffer: buffer) == "SSH-2.0-x\r\n")
    }

    @Test(arguments: [
        ("HTTP/1.1 403 Forbidden\r\n\r\n", SOCKSReplyCode.notAllowed),
        ("HTTP/1.0 407 Proxy Authentication Required\r\n\r\n", .notAllowed),
        ("HTTP/1.1 502 Bad Gateway\r\n\r\n", .hostUnreachable),
        ("HTTP/1.1 504 Gateway Timeout\r\n\r\n", .ttlExpired),
        ("HTTP/1.1 500 Oops\r\n\r\n", .generalFailure),
        ("SSH-2.0-not-http\r\n\r\n", .generalFailure),
    ])
    func refusalsMapToReplyCodes(response: String, code: SOCKSReplyCode) {
        var handshake = HTTPConnectHandshake(destination: Self.destination, username: nil, password: nil)!
        var buffer = ByteBuffer(string: response)
        guard case .failed(let got, _) = handshake.advance(&buffer) else {
            Issue.record("no failure for \(response)")
            return
        }
        #expect(got == code)
    }

    @Test func aHeadThatNeverEndsIsRefused() {
        var handshake = HTTPConnectHandshake(destination: Self.destination, username: nil, password: nil)!
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\n" + String(repeating: "X-Padding: 1\r\n", count: 2000))
        guard case .failed(.generalFailure, _) = handshake.advance(&buffer) else {
            Issue.record("a 28 KB head was taken")
            return
        }
    }

    /// Whether a head is too long depends on where it ends, not on how it was read: one read or
    /// many, the same answer (a 17 KB head was taken whole and refused in pieces).
    @Test(arguments: [16 * 1024 - 100, 16 * 1024 + 100])
    func aLongHeadGetsTheSameStepInOneReadOrMany(length: Int) {
        let head = "HTTP/1.1 200 OK\r\nX-Padding: " + String(repeating: "a", count: length - 33) + "\r\n\r\n"
        var whole = HTTPConnectHandshake(destination: Self.destination, username: nil, password: nil)!
        var buffer = ByteBuffer(string: head)
        let once = whole.advance(&buffer)
        var split = HTTPConnectHandshake(destination: Self.destination, username: nil, password: nil)!
        var pieces = ByteBuffer()
        var step = UpstreamStep.needMoreData
        for chunk in Array(head.utf8).chunked(into: 1000) where step == .needMoreData {
            pieces.writeBytes(chunk)
            step = split.advance(&pieces)
        }
        #expect(step == once)
        #expect((once == .established) == (length < 16 * 1024), "\(length) bytes: \(once)")
    }
}

extension Array {
    fileprivate func chunked(into size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}
