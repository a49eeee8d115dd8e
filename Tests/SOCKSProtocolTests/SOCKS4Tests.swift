import NIOCore
import Testing

@testable import SOCKSProtocol

/// SOCKS4 and SOCKS4a on a listener that serves them: CONNECT (and BIND where served), replies 0x5A/0x5B.
@Suite(.timeLimit(.minutes(1))) struct SOCKS4Tests {
    /// CONNECT 93.184.216.34:80 as user "bob".
    static let connect4: [UInt8] = [4, 1, 0, 80, 93, 184, 216, 34] + Array("bob".utf8) + [0]
    /// CONNECT example.com:443 (4a: DSTIP 0.0.0.1, the name after the user id), no user id.
    static let connect4a: [UInt8] = [4, 1, 1, 187, 0, 0, 0, 1, 0] + Array("example.com".utf8) + [0]

    @Test(arguments: [1, 2, 5, 1000])
    func connectAndConnect4aInAnyChunkingKeepThePayload(chunk: Int) {
        let payload = Array("GET / HTTP/1.0\r\n\r\n".utf8)
        for (request, destination, user) in [
            (Self.connect4, SOCKSEndpoint(host: .ipv4(.init(93, 184, 216, 34)), port: 80), "bob"),
            (Self.connect4a, SOCKSEndpoint(host: .domain("example.com"), port: 443), ""),
        ] {
            var driver = NegotiationDriver(socks4: true)
            let bytes = request + payload
            var index = 0
            while index < bytes.count {
                driver.feed(Array(bytes[index..<min(index + chunk, bytes.count)]))
                index += chunk
            }
            #expect(driver.steps.first == .execute(SOCKSRequest(command: .connect, destination: destination)))
            // VN 0, CD 0x5A, the bound port and IPv4 address (127.0.0.1:4242).
            #expect(driver.sentBytes == [0, 0x5A, 0x10, 0x92, 127, 0, 0, 1])
            #expect(driver.steps.last == .established)
            #expect(Array(driver.buffer.readableBytesView) == payload)
            #expect(driver.machine.socks4UserID == Array(user.utf8))
            #expect(driver.machine.isSOCKS4)
        }
    }

    @Test func aRefusedRequestGets0x5BAndAClose() {
        var driver = NegotiationDriver(socks4: true)
        driver.executeResult = .failure(.connectionRefused)
        driver.feed(Self.connect4)
        #expect(driver.sentBytes == [0, 0x5B, 0, 0, 0, 0, 0, 0])
        #expect(driver.closeReason == .requestFailed(.connectionRefused))
    }

    @Test func bindIsRejectedWith0x5BWhereItIsNotServed() {
        var driver = NegotiationDriver(socks4: true)
        driver.feed([4, 2, 0, 80, 93, 184, 216, 34, 0])
        #expect(driver.sentBytes == [0, 0x5B, 0, 0, 0, 0, 0, 0])
        #expect(driver.closeReason == .commandNotSupported(.bind))
        #expect(!driver.steps.contains { if case .execute = $0 { return true } else { return false } })
    }

    @Test func aListenerWithoutSOCKS4ClosesWithoutAWord() {
        var driver = NegotiationDriver()
        driver.feed(Self.connect4)
        #expect(driver.sentBytes == [])
        #expect(driver.closeReason == .protocolError(.socks4NotEnabled))
    }

    @Test func socks5StillWorksOnASOCKS4Listener() {
        var driver = NegotiationDriver(socks4: true)
        driver.feed([5, 1, 0] + connectRequest)
        #expect(driver.sentBytes == [5, 0] + successReply)
        #expect(!driver.machine.isSOCKS4)
    }

    @Test(arguments: [
        // A user id past 255 bytes, before its NUL has come and after.
        ([4, 1, 0, 80, 1, 2, 3, 4] + [UInt8](repeating: 0x61, count: 300), SOCKSProtocolError.fieldTooLong),
        ([4, 1, 0, 80, 1, 2, 3, 4] + [UInt8](repeating: 0x61, count: 256) + [0], .fieldTooLong),
        // A 4a name that is empty, too long, or not UTF-8.
        ([4, 1, 0, 80, 0, 0, 0, 9, 0, 0], .invalidDomainName),
        ([4, 1, 0, 80, 0, 0, 0, 9, 0] + [UInt8](repeating: 0x61, count: 256) + [0], .fieldTooLong),
        ([4, 1, 0, 80, 0, 0, 0, 9, 0, 0xC3, 0x28, 0], .invalidDomainName),
    ] as [([UInt8], SOCKSProtocolError)])
    func malformedRequestsAreRejectedWith0x5B(bytes: [UInt8], error: SOCKSProtocolError) {
        var driver = NegotiationDriver(socks4: true)
        driver.feed(bytes)
        #expect(driver.sentBytes == [0, 0x5B, 0, 0, 0, 0, 0, 0])
        #expect(driver.closeReason == .protocolError(error))
    }

    @Test func anIncompleteRequestWaits() throws {
        for length in 1..<Self.connect4a.count {
            var buffer = ByteBuffer(bytes: Self.connect4a.prefix(length))
            #expect(try buffer.readSOCKS4Request() == nil)
            #expect(buffer.readableBytes == length, "nothing consumed at \(length) bytes")
        }
    }

    @Test func requestsRoundTripThroughTheWriter() throws {
        for request in [
            SOCKS4Request(command: .connect, destination: SOCKSEndpoint(host: .ipv4(.init(10, 1, 2, 3)), port: 22), userID: Array("x".utf8)),
            SOCKS4Request(command: .connect, destination: SOCKSEndpoint(host: .domain("a.example"), port: 80), userID: []),
        ] {
            var buffer = ByteBuffer()
            buffer.writeSOCKS4Request(request)
            #expect(try buffer.readSOCKS4Request() == request)
            #expect(buffer.readableBytes == 0)
        }
    }
}
