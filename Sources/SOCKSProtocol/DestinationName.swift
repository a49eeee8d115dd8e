#if canImport(Glibc)
import Glibc
#endif

/// What a name a client sends (SOCKS5 `ATYP` 3, a SOCKS4a name, a UDP header) may be. A name
/// travels on to other protocols (an HTTP upstream's request line, a log, a resolver), so it is
/// data and is checked once, here: a DNS name of ASCII letters, digits, `-`, `_` and `.`, at most
/// 253 bytes, labels of 1 to 63 bytes, compared as bytes after folding case once. Anything else
/// (a space, CR/LF, a NUL, any byte above 0x7F) is refused before a rule sees it.
///
/// A name that is an address in disguise is taken as that address, so the rules and the guard
/// judge what it stands for: IPv4 in any form the C library's `inet_aton` reads (`127.1`,
/// `0x7f000001`, `2130706433`) and an IPv6 literal (with or without brackets).
public enum DestinationName {
    /// Longest name in text form, without the trailing dot (RFC 1035's 255 wire bytes).
    public static let maximumLength = 253
    /// Longest label.
    public static let maximumLabel = 63

    /// The host a name given in a request stands for; nil when it is not a DNS name.
    public static func host<Bytes: Collection<UInt8>>(fromWire bytes: Bytes) -> SOCKSHost? {
        if bytes.contains(UInt8(ascii: ":")) { return ipv6Literal(bytes) }
        guard let name = normalized(bytes) else { return nil }
        // Only a name whose last label is a number (`127.1`, `2130706433`, `0x7f000001`) can be
        // an address: the C library's parser is asked for those alone.
        let last = name.utf8.reversed().prefix { $0 != UInt8(ascii: ".") }
        let digits = last.allSatisfy(isDigit)
        guard digits || last.reversed().starts(with: "0x".utf8) else { return .domain(name) }
        if let address = ipv4Literal(name) { return .ipv4(address) }
        // A last label of digits only is no host name (RFC 3696 section 2) but what an address
        // that inet_aton refused looks like (`1.2.3.256`): not a name to pass on.
        return digits ? nil : .domain(name)
    }

    /// Whether a normalized name is one of the loopback names (`localhost` and `*.localhost` of
    /// RFC 6761, Debian's `ip6-localhost` and `ip6-loopback`): names every host answers with its
    /// own loopback, so never to be passed unresolved to another proxy.
    public static func isLoopbackName(_ name: String) -> Bool {
        name == "localhost" || name.hasSuffix(".localhost") || name == "ip6-localhost" || name == "ip6-loopback"
    }

    /// The name in the form rules compare: ASCII lower case, without a trailing dot; nil when it
    /// is not a DNS name.
    public static func normalized<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String? {
        var count = bytes.count
        if count > 1, bytes.reduce(into: UInt8(0), { $0 = $1 }) == UInt8(ascii: ".") { count -= 1 }
        guard count > 0, count <= maximumLength else { return nil }
        var label = 0
        var lowered: [UInt8] = []
        lowered.reserveCapacity(count)
        for byte in bytes.prefix(count) {
            switch byte {
            case UInt8(ascii: "."):
                guard label > 0 else { return nil }
                label = 0
                lowered.append(byte)
                continue
            case UInt8(ascii: "A")...UInt8(ascii: "Z"):
                lowered.append(byte | 0x20)
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
                lowered.append(byte)
            default:
                return nil
            }
            label += 1
            guard label <= maximumLabel else { return nil }
        }
        guard label > 0 else { return nil }
        return String(decoding: lowered, as: UTF8.self)
    }

    /// Whether `text` is a name in normalized form (what a request's name became).
    public static func isNormalized(_ text: String) -> Bool {
        normalized(text.utf8) == text
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private static func ipv4Literal(_ name: String) -> SOCKSIPv4Address? {
        var address = in_addr()
        guard inet_aton(name, &address) != 0 else { return nil }
        return SOCKSIPv4Address(UInt32(bigEndian: address.s_addr))
    }

    private static func ipv6Literal<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> SOCKSHost? {
        var text = Array(bytes)
        if text.first == UInt8(ascii: "["), text.last == UInt8(ascii: "]") { text = Array(text.dropFirst().dropLast()) }
        guard text.count <= 45, text.allSatisfy({ isDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".")
            || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0 | 0x20) })
        else { return nil }
        var address = in6_addr()
        guard inet_pton(AF_INET6, String(decoding: text, as: UTF8.self), &address) == 1 else { return nil }
        return .ipv6(SOCKSIPv6Address(bytes: withUnsafeBytes(of: address) { Array($0) }))
    }
}
