import NIOCore
import Testing

@testable import SOCKSProtocol

@Suite(.timeLimit(.minutes(1))) struct DestinationNameTests {
    private func host(_ text: String) -> SOCKSHost? { DestinationName.host(fromWire: Array(text.utf8)) }

    @Test(arguments: [
        "a.corp.example:80 HTTP/1.1\r\nX-Injected: 1\r\n\r\nCONNECT internal.corp.example",
        "a.corp.example HTTP/1.1", "a.corp.example\r\n", "a.corp.example\n", "a\0.example", "x\u{0600}.evil.example",
        "e\u{0301}.evil.example", "bücher.example", "evil.example\u{202E}", "a\u{2028}b.example", "a\u{85}.example", "a b.example",
        "a/b.example", "a@b.example", "a%0d.example", "\t.example",
    ])
    func aNameWithAnythingButDNSCharactersIsRefused(name: String) {
        #expect(host(name) == nil)
    }

    @Test(arguments: ["", ".", "..", ".example", "a..example", "example..", String(repeating: "a", count: 64) + ".example"])
    func emptyOrOverlongLabelsAreRefused(name: String) {
        #expect(host(name) == nil)
    }

    @Test func namesUpTo253BytesPassAndLongerAreRefused() {
        let labels = Array(repeating: String(repeating: "a", count: 63), count: 4).joined(separator: ".")
        let longest = String(labels.prefix(253))
        #expect(host(longest) == .domain(longest))
        #expect(host(longest + ".") == .domain(longest))
        #expect(host(String(labels.prefix(254))) == nil)
    }

    @Test func caseIsFoldedOnceAndATrailingDotDropped() {
        #expect(host("WWW.Example.COM.") == .domain("www.example.com"))
        #expect(host("_sip._tcp.Example-1.org") == .domain("_sip._tcp.example-1.org"))
    }

    @Test(arguments: [
        ("127.0.0.1", SOCKSIPv4Address(127, 0, 0, 1)), ("127.1", SOCKSIPv4Address(127, 0, 0, 1)),
        ("0x7f000001", SOCKSIPv4Address(127, 0, 0, 1)), ("2130706433", SOCKSIPv4Address(127, 0, 0, 1)),
        ("0177.0.0.1", SOCKSIPv4Address(127, 0, 0, 1)), ("169.254.169.254.", SOCKSIPv4Address(169, 254, 169, 254)),
        ("10.1", SOCKSIPv4Address(10, 0, 0, 1)),
    ])
    func ipv4LiteralsInEveryFormAreJudgedAsAddresses(name: String, address: SOCKSIPv4Address) {
        #expect(host(name) == .ipv4(address))
    }

    @Test(arguments: ["::1", "[::1]", "::ffff:127.0.0.1", "fe80::1"])
    func ipv6LiteralsAreJudgedAsAddresses(name: String) {
        guard case .ipv6? = host(name) else {
            Issue.record("\(name) is not an IPv6 address")
            return
        }
    }

    @Test(arguments: ["1.2.3.256", "1.2.3.4.5", "99999999999", "example.123", "fe80::1%eth0", "[::1", ":::"])
    func addressesThatDoNotParseAreNotPassedOnAsNames(name: String) {
        #expect(host(name) == nil)
    }

    @Test func aSOCKS4aNameGoesThroughTheSameCheck() {
        var buffer = ByteBuffer(bytes: [4, 1, 0, 80, 0, 0, 0, 9, 0] + Array("a.example\r\nX: 1".utf8) + [0])
        #expect(throws: SOCKSProtocolError.invalidDomainName) { try buffer.readSOCKS4Request() }
    }

    @Test func aSOCKS4aAddressInDisguiseBecomesTheAddress() throws {
        var loopback = ByteBuffer(bytes: [4, 1, 0, 80, 0, 0, 0, 9, 0] + Array("127.1".utf8) + [0])
        let request = try loopback.readSOCKS4Request()
        #expect(request?.destination.host == .ipv4(SOCKSIPv4Address(127, 0, 0, 1)))
    }

    @Test func loopbackNamesAreKnownAsSuch() {
        for name in ["localhost", "db.localhost", "ip6-localhost", "ip6-loopback"] { #expect(DestinationName.isLoopbackName(name), "\(name)") }
        for name in ["localhost.example", "notlocalhost", "example.com"] { #expect(!DestinationName.isLoopbackName(name), "\(name)") }
    }

    @Test func aUDPHeaderNameGoesThroughTheSameCheck() {
        let name = Array("a b.example".utf8)
        var buffer = ByteBuffer(bytes: [0, 0, 0, 3, UInt8(name.count)] + name + [0, 53])
        #expect(throws: UDPDatagramError.badAddress(.invalidDomainName)) { try buffer.readUDPDatagramHeader() }
    }
}
