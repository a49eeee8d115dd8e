/// A minimal reader of DER (X.690), enough for the parts of X.509 certificates and revocation
/// lists that name a client: definite lengths only, single-byte tags, every length checked
/// against what is left. Malformed input is an error, never a trap.
struct DERReader {
    /// One element: its tag, its content, and the whole encoding (tag and length included).
    struct Element {
        var tag: UInt8
        var content: ArraySlice<UInt8>
        var encoding: ArraySlice<UInt8>

        /// The elements inside a constructed element (a SEQUENCE, a SET, an explicit tag).
        var children: DERReader { DERReader(content) }
    }

    struct Malformed: Error {}

    private var rest: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { rest = bytes }

    var isAtEnd: Bool { rest.isEmpty }

    /// The next element's tag, without reading it.
    var nextTag: UInt8? { rest.first }

    mutating func read() throws(Malformed) -> Element {
        let start = rest.startIndex
        guard rest.count >= 2 else { throw Malformed() }
        let tag = rest[start]
        // High tag numbers (0x1F) do not occur in the structures read here.
        guard tag & 0x1F != 0x1F else { throw Malformed() }
        var index = start + 1
        let first = rest[index]
        index += 1
        var length = 0
        if first < 0x80 {
            length = Int(first)
        } else {
            let count = Int(first & 0x7F)
            // 0x80 is the indefinite length (BER, not DER); over 4 bytes is beyond any file here.
            guard count >= 1, count <= 4, rest.endIndex - index >= count else { throw Malformed() }
            for _ in 0..<count {
                length = length << 8 | Int(rest[index])
                index += 1
            }
        }
        guard rest.endIndex - index >= length else { throw Malformed() }
        let end = index + length
        let element = Element(tag: tag, content: rest[index..<end], encoding: rest[start..<end])
        rest = rest[end...]
        return element
    }

    /// Reads the next element, which must carry `tag`.
    mutating func read(_ tag: UInt8) throws(Malformed) -> Element {
        let element = try read()
        guard element.tag == tag else { throw Malformed() }
        return element
    }

    /// Reads the next element when it carries `tag`; else leaves it.
    mutating func readIf(_ tag: UInt8) throws(Malformed) -> Element? {
        guard nextTag == tag else { return nil }
        return try read()
    }
}

extension DERReader {
    static let sequence: UInt8 = 0x30
    static let set: UInt8 = 0x31
    static let integer: UInt8 = 0x02
    static let objectIdentifier: UInt8 = 0x06
    static let octetString: UInt8 = 0x04
    static let boolean: UInt8 = 0x01
    static let utcTime: UInt8 = 0x17
    static let generalizedTime: UInt8 = 0x18

    /// An INTEGER's magnitude as the certificate's serial: leading zero bytes dropped, so that
    /// `00 80` and `80` are one serial however they were padded.
    static func serial(_ content: ArraySlice<UInt8>) -> [UInt8] {
        Array(content.drop { $0 == 0 })
    }
}
