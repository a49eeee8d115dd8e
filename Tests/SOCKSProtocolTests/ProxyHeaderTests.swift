import NIOCore
import Testing

@testable import SOCKSProtocol

/// Reads `bytes` (followed by a SOCKS greeting) whole and fed one byte at a time: both must give
/// the same header and leave exactly the greeting.
func readHeaderBothWays(_ bytes: [UInt8], _ version: ProxyProtocolVersion) throws(ProxyHeaderError) -> ProxyHeader? {
    let greeting: [UInt8] = [5, 1, 0]
    var whole = ByteBuffer(bytes: bytes + greeting)
    let first = try whole.readProxyHeader(version)
    #expect(Array(whole.readableBytesView) == greeting, "coalesced with the greeting, the greeting stays")
    var split = ByteBuffer()
    var second: ProxyHeader?
    for byte in bytes + greeting {
        split.writeInteger(byte)
        if second == nil { second = try split.readProxyHeader(version) }
    }
    #expect(second == first, "split byte by byte, the same header")
    #expect(Array(split.readableBytesView) == greeting)
    return first
}

func v2(command: UInt8 = 1, family: UInt8, body: [UInt8]) -> [UInt8] {
    ProxyHeader.signature + [0x20 | command, family, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
}

@Suite(.timeLimit(.minutes(1))) struct ProxyHeaderTests {
    @Test func v1TCP4AndTCP6GiveTheClient() throws {
        let four = try readHeaderBothWays(Array("PROXY TCP4 192.0.2.7 198.51.100.1 40123 1080\r\n".utf8), .v1)
        #expect(four == ProxyHeader(
            source: SOCKSEndpoint(host: .ipv4(.init(192, 0, 2, 7)), port: 40123),
            destination: SOCKSEndpoint(host: .ipv4(.init(198, 51, 100, 1)), port: 1080)))
        let six = try readHeaderBothWays(Array("PROXY TCP6 2001:db8::7 2001:db8::1 40123 1080\r\n".utf8), .any)
        #expect(six?.source == SOCKSEndpoint(host: .ipv6(.init(high: 0x2001_0db8_0000_0000, low: 7)), port: 40123))
        let unknown = try readHeaderBothWays(Array("PROXY UNKNOWN\r\n".utf8), .v1)
        #expect(unknown?.isLocal == true)
    }

    @Test func v2IPv4IPv6AndLocalWithTLVsSkipped() throws {
        let body4: [UInt8] = [192, 0, 2, 7, 198, 51, 100, 1, 0x9C, 0xBB, 0x04, 0x38] + [0x04, 0x00, 0x01, 0x2A]  // + a TLV
        let four = try readHeaderBothWays(v2(family: 0x11, body: body4), .v2)
        #expect(four?.source == SOCKSEndpoint(host: .ipv4(.init(192, 0, 2, 7)), port: 40123))
        #expect(four?.destination == SOCKSEndpoint(host: .ipv4(.init(198, 51, 100, 1)), port: 1080))
        let source6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [7]
        let destination6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
        let six = try readHeaderBothWays(v2(family: 0x21, body: source6 + destination6 + [0x9C, 0xBB, 0x04, 0x38]), .any)
        #expect(six?.source == SOCKSEndpoint(host: .ipv6(.init(high: 0x2001_0db8_0000_0000, low: 7)), port: 40123))
        // LOCAL: the balancer's own health check; its addresses, if any, are not a client.
        let local = try readHeaderBothWays(v2(command: 0, family: 0x11, body: body4), .v2)
        #expect(local?.isLocal == true)
    }

    @Test(arguments: [
        ("SOCKS straight away", [UInt8]([5, 1, 0]), ProxyProtocolVersion.any),
        ("v2 where v1 is expected", v2(family: 0x11, body: [UInt8](repeating: 0, count: 12)), .v1),
        ("v1 where v2 is expected", Array("PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n".utf8), .v2),
    ])
    func aConnectionWithoutTheExpectedHeaderIsRefusedAtOnce(name: String, bytes: [UInt8], version: ProxyProtocolVersion) {
        // As soon as the first bytes cannot begin the header: no waiting for more.
        var buffer = ByteBuffer(bytes: Array(bytes.prefix(6)))
        #expect(throws: ProxyHeaderError.missing, "\(name)") { try buffer.readProxyHeader(version) }
    }

    @Test(arguments: [
        "PROXY TCP4 192.0.2.7 198.51.100.1 40123\r\n",  // a field missing
        "PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",  // IPv6 in TCP4
        "PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",  // port out of range
        "PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n",  // leading zero
        "PROXY SCTP 192.0.2.7 198.51.100.1 1 2\r\n",  // unknown protocol
        "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",  // no CR
    ])
    func malformedV1HeadersAreErrors(line: String) {
        var buffer = ByteBuffer(string: line)
        #expect(throws: ProxyHeaderError.self) { try buffer.readProxyHeader(.v1) }
    }

    @Test func malformedV2HeadersAndOverlongV1AreErrors() {
        for bytes in [
            ProxyHeader.signature + [0x30, 0x11, 0, 12] + [UInt8](repeating: 0, count: 12),  // version 3
            ProxyHeader.signature + [0x22, 0x11, 0, 12] + [UInt8](repeating: 0, count: 12),  // command 2
            v2(family: 0x11, body: [UInt8](repeating: 0, count: 8)),  // short IPv4 block
            v2(family: 0x31, body: [UInt8](repeating: 0, count: 216)),  // AF_UNIX
            Array(("PROXY TCP4 " + String(repeating: "9", count: 120)).utf8),  // no line end in 107 bytes
        ] {
            var buffer = ByteBuffer(bytes: bytes)
            #expect(throws: ProxyHeaderError.self) { try buffer.readProxyHeader(.any) }
        }
    }

    @Test func anIncompleteHeaderWaitsAndConsumesNothing() throws {
        var buffer = ByteBuffer(string: "PROXY TCP4 192.0.2.7")
        #expect(try buffer.readProxyHeader(.v1) == nil)
        #expect(buffer.readableBytes == 20)
        var v2Part = ByteBuffer(bytes: v2(family: 0x11, body: [UInt8](repeating: 1, count: 12)).prefix(20))
        #expect(try v2Part.readProxyHeader(.v2) == nil)
        #expect(v2Part.readableBytes == 20)
    }
}
