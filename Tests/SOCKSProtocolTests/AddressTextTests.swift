import NIOCore
import SOCKSProtocol
import Testing

/// Address text as logs, listener labels and errors show it, from the one formatter.
@Suite(.timeLimit(.minutes(1))) struct AddressTextTests {
    @Test(arguments: [
        (UInt32(0), nil, "0.0.0.0"), (0xFFFF_FFFF, 65535, "255.255.255.255:65535"), (0x0A00_0001, 0, "10.0.0.1:0"),
        (0x0102_0304, 80, "1.2.3.4:80"), (0xCB00_7109, 1080, "203.0.113.9:1080"), (0x6400_0A64, 100, "100.0.10.100:100"),
    ] as [(UInt32, Int?, String)])
    func ipv4TextIsDottedDecimalWithItsPort(value: UInt32, port: Int?, text: String) {
        #expect(AddressText.ipv4(value, port: port) == text)
    }

    @Test func everyIPv4TextMatchesTheDigitsOfItsBytes() {
        // A spread of values through every byte width (1, 2 and 3 digits).
        var value: UInt32 = 1
        for _ in 0..<2000 {
            value = value &* 2_654_435_761 &+ 12345
            let bytes = [value >> 24, value >> 16 & 0xFF, value >> 8 & 0xFF, value & 0xFF]
            let port = Int(value % 65536)
            #expect(AddressText.ipv4(value, port: port) == bytes.map(String.init).joined(separator: ".") + ":\(port)")
        }
    }

    @Test func endpointsOfEveryKind() throws {
        #expect(SOCKSEndpoint(host: .domain("example.com"), port: 443).description == "example.com:443")
        #expect(SOCKSEndpoint(host: .ipv6(SOCKSIPv6Address(high: 0x2001_0db8_0000_0000, low: 1)), port: 80).description == "[2001:db8::1]:80")
        #expect(try SocketAddress(ipAddress: "192.0.2.1", port: 8080).endpointText == "192.0.2.1:8080")
        #expect(try SocketAddress(ipAddress: "::1", port: 1080).endpointText == "[::1]:1080")
    }
}
