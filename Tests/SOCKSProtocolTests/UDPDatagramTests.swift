import NIOCore
import Testing

@testable import SOCKSProtocol

@Suite(.timeLimit(.minutes(1))) struct UDPDatagramTests {
    @Test(arguments: [
        SOCKSEndpoint(host: .ipv4(.init(192, 0, 2, 1)), port: 53),
        SOCKSEndpoint(host: .ipv6(.init(high: 0x2001_0db8_0000_0000, low: 1)), port: 443),
        SOCKSEndpoint(host: .domain("dns.example"), port: 5353),
        SOCKSEndpoint(host: .domain(Array(repeating: String(repeating: "n", count: 63), count: 4).joined(separator: ".").prefix(253).description), port: 1),
    ])
    func headerRoundTripsForEachAddressType(endpoint: SOCKSEndpoint) throws {
        var buffer = ByteBuffer()
        buffer.writeUDPDatagramHeader(UDPDatagramHeader(endpoint: endpoint))
        buffer.writeString("payload")
        let header = try buffer.readUDPDatagramHeader()
        #expect(header == UDPDatagramHeader(fragment: 0, endpoint: endpoint))
        #expect(String(buffer: buffer) == "payload")
    }

    @Test func fragmentNumberIsReadSoTheRelayCanDropIt() throws {
        var buffer = ByteBuffer(bytes: [0, 0, 1, 1, 127, 0, 0, 1, 0, 53, 0xAA])
        let header = try buffer.readUDPDatagramHeader()
        #expect(header.fragment == 1)
        #expect(buffer.readableBytes == 1)
    }

    @Test func emptyDataIsAllowed() throws {
        var buffer = ByteBuffer(bytes: [0, 0, 0, 1, 127, 0, 0, 1, 0, 53])
        _ = try buffer.readUDPDatagramHeader()
        #expect(buffer.readableBytes == 0)
    }

    @Test(arguments: [
        [] as [UInt8], [0], [0, 0], [0, 0, 0], [0, 0, 0, 1, 127, 0], [0, 0, 0, 1, 127, 0, 0, 1, 0],
        [0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 3, 10, 0x61, 0x62],
    ])
    func truncatedHeadersAreErrors(bytes: [UInt8]) {
        var buffer = ByteBuffer(bytes: bytes)
        #expect(throws: UDPDatagramError.truncated) { try buffer.readUDPDatagramHeader() }
        #expect(buffer.readableBytes == bytes.count, "a failed read must consume nothing")
    }

    @Test(arguments: [
        ([0, 0, 0, 2, 1, 2, 3, 4, 0, 53] as [UInt8], UDPDatagramError.badAddress(.unsupportedAddressType(2))),
        ([0, 0, 0, 3, 0, 0, 53] as [UInt8], .badAddress(.invalidDomainName)),
        ([0, 0, 0, 3, 2, 0x61, 0, 0, 53] as [UInt8], .badAddress(.invalidDomainName)),
    ])
    func malformedAddressesAreErrors(bytes: [UInt8], error: UDPDatagramError) {
        var buffer = ByteBuffer(bytes: bytes)
        #expect(throws: error) { try buffer.readUDPDatagramHeader() }
    }

    @Test func oversizedDatagramKeepsAllItsData() throws {
        var buffer = ByteBuffer()
        buffer.writeUDPDatagramHeader(UDPDatagramHeader(endpoint: SOCKSEndpoint(host: .ipv4(.init(10, 0, 0, 1)), port: 9)))
        buffer.writeBytes([UInt8](repeating: 7, count: 65_507))
        _ = try buffer.readUDPDatagramHeader()
        #expect(buffer.readableBytes == 65_507)
    }
}
