import NIOCore
import Testing

@testable import SOCKSProtocol

/// Feeds `bytes` to `read` whole and one byte at a time; both ways must give the same value and
/// consume exactly the message.
func parseBothWays<T: Equatable>(
    _ bytes: [UInt8], trailing: [UInt8] = [], _ read: (inout ByteBuffer) throws(SOCKSProtocolError) -> T?
) throws -> T? {
    var whole = ByteBuffer(bytes: bytes + trailing)
    let first = try read(&whole)
    if first != nil { #expect(whole.readableBytes == trailing.count) }

    var partial = ByteBuffer()
    var result: T?
    for (index, byte) in bytes.enumerated() {
        partial.writeInteger(byte)
        let before = partial.readableBytes
        result = try read(&partial)
        if index < bytes.count - 1 {
            #expect(result == nil, "a message was produced before its last byte")
            #expect(partial.readableBytes == before, "a partial message consumed bytes")
        }
    }
    #expect(result == first)
    return first
}

@Suite(.timeLimit(.minutes(1))) struct ParserTests {
    @Test func greetingIsParsedWholeAndByteByByte() throws {
        let greeting = try parseBothWays([5, 2, 0, 2], trailing: [1, 2, 3]) { (b: inout ByteBuffer) throws(SOCKSProtocolError) in try b.readClientGreeting() }
        #expect(greeting == ClientGreeting(methods: [.none, .usernamePassword]))
    }

    @Test func greetingWithNoMethodsParses() throws {
        let greeting = try parseBothWays([5, 0]) { (b: inout ByteBuffer) throws(SOCKSProtocolError) in try b.readClientGreeting() }
        #expect(greeting?.methods == [])
    }

    @Test func greetingWithWrongVersionIsAnError() {
        var buffer = ByteBuffer(bytes: [4, 1, 0])
        #expect(throws: SOCKSProtocolError.invalidVersion(4)) { try buffer.readClientGreeting() }
    }

    @Test func usernamePasswordRequestParses() throws {
        let bytes: [UInt8] = [1, 5] + Array("alice".utf8) + [6] + Array("s3cret".utf8)
        let request = try parseBothWays(bytes, trailing: [5, 1, 0]) { (b: inout ByteBuffer) throws(SOCKSProtocolError) in try b.readUsernamePasswordRequest() }
        #expect(request?.username == "alice")
        #expect(request?.password == Password("s3cret"))
    }

    @Test func usernamePasswordWithMaximumLengthsParses() throws {
        let user = [UInt8](repeating: UInt8(ascii: "u"), count: 255)
        let pass = [UInt8](repeating: UInt8(ascii: "p"), count: 255)
        let request = try parseBothWays([1, 255] + user + [255] + pass) { (b: inout ByteBuffer) throws(SOCKSProtocolError) in try b.readUsernamePasswordRequest() }
        #expect(request?.username.utf8.count == 255)
        #expect(request?.password.count == 255)
    }

    @Test(arguments: [
        ([1, 0, 1, 0x61] as [UInt8], SOCKSProtocolError.invalidCredentials),
        ([1, 1, 0x61, 0] as [UInt8], .invalidCredentials),
        ([1, 2, 0x61, 0, 1, 0x62] as [UInt8], .invalidCredentials),
        ([1, 1, 0x61, 2, 0x62, 0] as [UInt8], .invalidCredentials),
        ([5, 1, 0x61, 1, 0x62] as [UInt8], .invalidAuthenticationVersion(5)),
    ])
    func malformedCredentialsAreErrors(bytes: [UInt8], error: SOCKSProtocolError) {
        var buffer = ByteBuffer(bytes: bytes)
        #expect(throws: error) { try buffer.readUsernamePasswordRequest() }
    }

    @Test func passwordNeverAppearsInDescriptions() {
        let request = UsernamePasswordRequest(username: "alice", password: Password("hunter2"))
        #expect(!"\(request)".contains("hunter2"))
        #expect(!String(reflecting: request.password).contains("hunter2"))
        #expect(!"\(request.password)".contains("hunter2"))
    }

    @Test func ipv4RequestParses() throws {
        let request = try parseBothWays([5, 1, 0, 1, 10, 0, 0, 1, 0x1F, 0x90], trailing: Array("GET /".utf8)) { (b: inout ByteBuffer) throws(SOCKSProtocolError) in try b.readSOCKSRequest() }
        #expect(request == SOCKSRequest(command: .connect, destination: SOCKSEndpoint(host: .ipv4(.init(10, 0, 0, 1)), port: 8080)))
    }

    @Test func ipv6RequestParses() throws {
        let address: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
        let request = try parseBothWays([5, 1, 0, 4] + address + [0, 80]) { (b: inout ByteBuffer) throws(SOCKSProtocolError) in try b.readSOCKSRequest() }
        #expect(request?.destination.description == "[2001:db8::1]:80")
    }

    @Test func domainRequestParsesUpTo253Bytes() throws {
        for labels in [1, 2, 4] {
            // Labels of 63 bytes and dots: 63, 127, 255 bytes; the last with one label short of 63.
            var name = Array(repeating: String(repeating: "a", count: 63), count: labels).joined(separator: ".")
            if name.utf8.count > 253 { name = String(name.dropLast(name.utf8.count - 253)) }
            let bytes = Array(name.utf8)
            let request = try parseBothWays([5, 1, 0, 3, UInt8(bytes.count)] + bytes + [1, 187]) { (b: inout ByteBuffer) throws(SOCKSProtocolError) in try b.readSOCKSRequest() }
            #expect(request?.destination == SOCKSEndpoint(host: .domain(name), port: 443))
        }
    }

    @Test func aNonASCIINameIsRefusedWhole() throws {
        let name = Array("bücher.example".utf8)
        var buffer = ByteBuffer(bytes: [5, 1, 0, 3, UInt8(name.count)] + name + [0, 80])
        #expect(throws: SOCKSProtocolError.invalidDomainName) { try buffer.readSOCKSRequest() }
    }

    @Test func unknownCommandParsesSoTheServerCanReply() throws {
        let request = try parseBothWays([5, 9, 0, 1, 1, 2, 3, 4, 0, 1]) { (b: inout ByteBuffer) throws(SOCKSProtocolError) in try b.readSOCKSRequest() }
        #expect(request?.command == SOCKSCommand(rawValue: 9))
    }

    @Test(arguments: [
        ([5, 1, 0, 3, 0, 0, 80] as [UInt8], SOCKSProtocolError.invalidDomainName),
        ([5, 1, 0, 3, 3, 0x61, 0, 0x62, 0, 80] as [UInt8], .invalidDomainName),
        // Not UTF-8: decoded leniently it would become another name (found by the fuzzer).
        ([5, 1, 0, 3, 3, 0x65, 0xFA, 0xFA, 0, 80] as [UInt8], .invalidDomainName),
        ([5, 1, 0, 3, 2, 0xC3, 0x28, 0, 80] as [UInt8], .invalidDomainName),
        ([5, 1, 0, 2, 1, 2, 3, 4, 0, 80] as [UInt8], .unsupportedAddressType(2)),
        ([5, 1, 0, 0xFF] as [UInt8], .unsupportedAddressType(0xFF)),
        ([4, 1, 0, 1, 1, 2, 3, 4, 0, 80] as [UInt8], .invalidVersion(4)),
    ])
    func malformedRequestsAreErrors(bytes: [UInt8], error: SOCKSProtocolError) {
        var buffer = ByteBuffer(bytes: bytes)
        #expect(throws: error) { try buffer.readSOCKSRequest() }
    }

    @Test func replyRoundTrips() throws {
        for bound in [
            SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: 5000),
            SOCKSEndpoint(host: .ipv6(.init(high: 0, low: 1)), port: 1),
            SOCKSEndpoint(host: .domain("example.com"), port: 65535),
        ] {
            var buffer = ByteBuffer()
            buffer.writeSOCKSReply(SOCKSReply(code: .succeeded, bound: bound))
            #expect(try buffer.readSOCKSReply() == SOCKSReply(code: .succeeded, bound: bound))
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test func failureReplyIsTenBytes() {
        var buffer = ByteBuffer()
        buffer.writeSOCKSReply(SOCKSReply(code: .connectionRefused))
        #expect(Array(buffer.readableBytesView) == [5, 5, 0, 1, 0, 0, 0, 0, 0, 0])
    }

    @Test(arguments: [
        (SOCKSIPv6Address(high: 0, low: 1), "::1"),
        (SOCKSIPv6Address(high: 0, low: 0), "::"),
        (SOCKSIPv6Address(high: 0x2001_0db8_0000_0000, low: 0x0000_0000_0000_0001), "2001:db8::1"),
        (SOCKSIPv6Address(high: 0x2001_0db8_0000_0001, low: 0x0000_0000_0001_0001), "2001:db8:0:1::1:1"),
        (SOCKSIPv6Address(high: 0x2001_0db8_0001_0001, low: 0x0001_0001_0001_0001), "2001:db8:1:1:1:1:1:1"),
        (SOCKSIPv6Address(high: 0, low: 0x0000_ffff_7f00_0001), "::ffff:127.0.0.1"),
        (SOCKSIPv6Address(high: 0xfe80_0000_0000_0000, low: 0x0000_0000_0000_0000), "fe80::"),
        (SOCKSIPv6Address(high: 0x2001_0db8_0000_0000, low: 0x0001_0000_0000_0001), "2001:db8::1:0:0:1"),
    ])
    func ipv6AddressesPrintAsRFC5952(address: SOCKSIPv6Address, text: String) {
        #expect(address.description == text)
        #expect(SOCKSIPv6Address(bytes: address.bytes) == address)
    }
}
