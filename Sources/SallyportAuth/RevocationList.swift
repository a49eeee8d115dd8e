/// The serial numbers a certificate revocation list (RFC 5280 section 5) revokes, and who issued
/// it. The list is the administrator's own file, read at start and at every reload; its signature
/// is not checked (the file is trusted as the configuration is), its issuer is.
public struct RevocationList: Sendable, Hashable {
    /// The issuer's distinguished name, as encoded.
    public var issuer: [UInt8]
    /// Revoked serial numbers, leading zero bytes dropped.
    public var revoked: Set<[UInt8]>
    /// `nextUpdate` as written (UTCTime or GeneralizedTime text), when the list has one.
    public var nextUpdate: String?

    public struct Malformed: Error, Sendable {}

    /// Reads one CRL from its DER encoding.
    public init(der: [UInt8]) throws(Malformed) {
        do {
            var outer = DERReader(der[...])
            var list = try outer.read(DERReader.sequence).children
            var tbs = try list.read(DERReader.sequence).children
            _ = try tbs.readIf(DERReader.integer)  // version
            _ = try tbs.read(DERReader.sequence)  // signature algorithm
            issuer = Array(try tbs.read(DERReader.sequence).encoding)
            _ = try Self.readTime(&tbs)  // thisUpdate
            nextUpdate = nil
            if tbs.nextTag == DERReader.utcTime || tbs.nextTag == DERReader.generalizedTime {
                nextUpdate = try Self.readTime(&tbs)
            }
            revoked = []
            if let entries = try tbs.readIf(DERReader.sequence) {
                var reader = entries.children
                while !reader.isAtEnd {
                    var entry = try reader.read(DERReader.sequence).children
                    revoked.insert(DERReader.serial(try entry.read(DERReader.integer).content))
                }
            }
        } catch {
            throw Malformed()
        }
    }

    /// Whether the certificate `facts` describe is on this list.
    public func revokes(_ facts: CertificateFacts) -> Bool {
        facts.issuer == issuer && revoked.contains(facts.serial)
    }

    private static func readTime(_ reader: inout DERReader) throws(DERReader.Malformed) -> String {
        let time = try reader.read()
        guard time.tag == DERReader.utcTime || time.tag == DERReader.generalizedTime, time.content.allSatisfy({ $0 < 0x80 }) else {
            throw DERReader.Malformed()
        }
        return String(decoding: time.content, as: UTF8.self)
    }
}

/// PEM (RFC 7468): the base64 bodies between `-----BEGIN label-----` and `-----END label-----`.
public enum PEM {
    /// Every block labelled `label`, decoded; nil when a block's body is not base64.
    public static func blocks(_ text: String, label: String) -> [[UInt8]]? {
        let begin = "-----BEGIN \(label)-----"
        let end = "-----END \(label)-----"
        var result: [[UInt8]] = []
        var body: String?
        for line in text.split(whereSeparator: \.isNewline) {
            let line = line.trimmingSpaces
            if line == begin {
                body = ""
            } else if line == end, let text = body {
                guard let bytes = base64(text) else { return nil }
                result.append(bytes)
                body = nil
            } else if body != nil {
                body! += line
            }
        }
        return result
    }

    private static func base64(_ text: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        var accumulator: UInt32 = 0
        var bits = 0
        for character in text.utf8 {
            let value: UInt8
            switch character {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = character - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = character - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = character - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="): continue
            default: return nil
            }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                bytes.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        return bytes
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
