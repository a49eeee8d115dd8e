/// Reads the YAML a configuration file needs: block mappings and sequences by indentation, flow
/// `[...]` and `{...}` (nested, over several lines), plain, single- and double-quoted scalars,
/// comments, and one document (`---` allowed). Anchors, aliases, tags and block scalars (`|`, `>`)
/// are refused with an error naming them. A key given twice in a mapping is an error.
///
/// Written for this file format rather than taken from a YAML library: the library at hand brought
/// Foundation's ICU data (34 MB) into the binary.
struct YAMLReader {
    private let bytes: [UInt8]
    private var index = 0
    private var line = 1
    private var lineStart = 0

    private init(_ text: String) { bytes = Array(text.utf8) }

    /// The document's root, or nil for a file with no content.
    static func compose(_ text: String) throws(YAMLSyntaxError) -> YAMLNode? {
        var reader = YAMLReader(text)
        reader.skipBlankLinesAndDocumentStart()
        guard !reader.atEnd else { return nil }
        let root = try reader.blockNode(parentIndent: -1)
        reader.skipBlankLines()
        if !reader.atEnd, !reader.atDocumentEnd {
            throw YAMLSyntaxError(mark: reader.mark, message: "unexpected content here (is it indented as the lines above it?)")
        }
        return root
    }

    // MARK: Position

    private var atEnd: Bool { index >= bytes.count }
    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }
    private func peek(_ offset: Int = 1) -> UInt8? { index + offset < bytes.count ? bytes[index + offset] : nil }
    private var column: Int { index - lineStart }
    private var mark: YAMLMark { YAMLMark(line: line, column: column + 1) }

    private mutating func advance() {
        if bytes[index] == UInt8(ascii: "\n") {
            line += 1
            lineStart = index + 1
        }
        index += 1
    }

    private mutating func skipSpaces() {
        while let byte = current, byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { advance() }
    }

    /// Skips spaces and a comment up to (not over) the end of the line.
    private mutating func skipToLineEnd() {
        skipSpaces()
        if current == UInt8(ascii: "#") {
            while let byte = current, byte != UInt8(ascii: "\n") { advance() }
        }
    }

    private var atLineEnd: Bool { current == nil || current == UInt8(ascii: "\n") || current == UInt8(ascii: "\r") }

    /// Moves to the first character of the next line with content; stays put when the current
    /// line has content after the position.
    private mutating func skipBlankLines() {
        while true {
            let save = (index, line, lineStart)
            skipToLineEnd()
            if current == UInt8(ascii: "\r") { advance() }
            if current == UInt8(ascii: "\n") {
                advance()
                continue
            }
            if atEnd { return }
            (index, line, lineStart) = save
            skipSpaces()
            return
        }
    }

    private var atDocumentEnd: Bool { column == 0 && startsWith("...") }

    private mutating func skipBlankLinesAndDocumentStart() {
        skipBlankLines()
        if column == 0, startsWith("---"), peek(3).map({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") }) ?? true {
            for _ in 0..<3 { advance() }
            skipBlankLines()
        }
    }

    private func startsWith(_ text: String) -> Bool {
        let prefix = Array(text.utf8)
        return index + prefix.count <= bytes.count && Array(bytes[index..<index + prefix.count]) == prefix
    }

    // MARK: Block context

    /// The node that starts at the current position (the first content of a line, or after
    /// `- `), deeper than `parentIndent`.
    private mutating func blockNode(parentIndent: Int) throws(YAMLSyntaxError) -> YAMLNode {
        let indent = column
        try refuseUnsupported()
        if current == UInt8(ascii: "-"), isSpaceOrEnd(peek()) {
            return try blockSequence(indent: indent)
        }
        if current == UInt8(ascii: "[") || current == UInt8(ascii: "{") {
            let node = try flowNode()
            skipToLineEnd()
            return node
        }
        let start = (index, line, lineStart)
        let scalar = try scalarInBlock()
        skipSpaces()
        if current == UInt8(ascii: ":"), isSpaceOrEnd(peek()) {
            (index, line, lineStart) = start
            return try blockMapping(indent: indent)
        }
        skipToLineEnd()
        return scalar
    }

    private mutating func blockSequence(indent: Int) throws(YAMLSyntaxError) -> YAMLNode {
        let start = mark
        var items: [YAMLNode] = []
        while true {
            advance()  // the "-"
            let afterDash = mark
            skipToLineEnd()
            if atLineEnd {
                skipBlankLines()
                if atEnd || column <= indent {
                    items.append(.scalar(YAMLScalar(string: "", isNull: true), afterDash))
                } else {
                    items.append(try blockNode(parentIndent: indent))
                }
            } else {
                items.append(try blockNode(parentIndent: indent))
            }
            skipBlankLines()
            if atEnd || atDocumentEnd || column < indent { break }
            // A list that is a key's value may sit at the key's indentation: the next key ends it.
            if column == indent, !(current == UInt8(ascii: "-") && isSpaceOrEnd(peek())) { break }
            guard column == indent else {
                throw YAMLSyntaxError(mark: mark, message: "expected another list item ('- ') at column \(indent + 1)")
            }
        }
        return .sequence(items, start)
    }

    private mutating func blockMapping(indent: Int) throws(YAMLSyntaxError) -> YAMLNode {
        let start = mark
        var entries: [(key: YAMLNode, value: YAMLNode)] = []
        var seen: Set<String> = []
        while true {
            try refuseUnsupported()
            let key = try scalarInBlock()
            skipSpaces()
            guard current == UInt8(ascii: ":"), isSpaceOrEnd(peek()) else {
                throw YAMLSyntaxError(mark: mark, message: "expected ':' after the key (write key: value)")
            }
            if let name = key.scalar?.string, !seen.insert(name).inserted {
                throw YAMLSyntaxError(mark: key.mark ?? start, message: "duplicated key \(name); give each key once")
            }
            advance()  // the ":"
            let here = mark  // where an empty value is
            skipToLineEnd()
            let value: YAMLNode
            if atLineEnd {
                skipBlankLines()
                // A nested block, or a list at the key's own indentation (YAML allows both).
                if !atEnd, !atDocumentEnd, column > indent || (column == indent && current == UInt8(ascii: "-") && isSpaceOrEnd(peek())) {
                    value = try blockNode(parentIndent: indent)
                } else {
                    value = .scalar(YAMLScalar(string: "", isNull: true), here)
                }
            } else {
                value = try blockNode(parentIndent: indent)
            }
            entries.append((key, value))
            skipBlankLines()
            if atEnd || atDocumentEnd || column < indent { break }
            guard column == indent else {
                throw YAMLSyntaxError(mark: mark, message: "this line is indented more than the keys above it at column \(indent + 1)")
            }
        }
        return .mapping(entries, start)
    }

    private func isSpaceOrEnd(_ byte: UInt8?) -> Bool {
        byte == nil || byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r")
    }

    private func refuseUnsupported() throws(YAMLSyntaxError) {
        switch current {
        case UInt8(ascii: "&"), UInt8(ascii: "*"): throw YAMLSyntaxError(mark: mark, message: "anchors and aliases (& and *) are not supported here")
        case UInt8(ascii: "!"): throw YAMLSyntaxError(mark: mark, message: "tags (!) are not supported here")
        case UInt8(ascii: "|"), UInt8(ascii: ">"):
            throw YAMLSyntaxError(mark: mark, message: "block scalars (| and >) are not supported here; write the value on one line")
        case UInt8(ascii: "?"): throw YAMLSyntaxError(mark: mark, message: "complex keys (?) are not supported here")
        case UInt8(ascii: "%"), UInt8(ascii: "@"), UInt8(ascii: "`"):
            throw YAMLSyntaxError(mark: mark, message: "a value cannot start with '\(Character(UnicodeScalar(current!)))'; quote it")
        default: return
        }
    }

    /// A scalar in block context: quoted, or plain up to the end of the line, a comment, or ': '.
    private mutating func scalarInBlock() throws(YAMLSyntaxError) -> YAMLNode {
        if current == UInt8(ascii: "\"") || current == UInt8(ascii: "'") { return try quoted() }
        let start = mark
        var text: [UInt8] = []
        while let byte = current, byte != UInt8(ascii: "\n"), byte != UInt8(ascii: "\r") {
            if byte == UInt8(ascii: ":"), isSpaceOrEnd(peek()) { break }
            if byte == UInt8(ascii: "#"), text.last == UInt8(ascii: " ") || text.last == UInt8(ascii: "\t") { break }
            text.append(byte)
            advance()
        }
        return plain(text, start)
    }

    private func plain(_ text: [UInt8], _ mark: YAMLMark) -> YAMLNode {
        var text = text[...]
        while let last = text.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { text = text.dropLast() }
        let string = String(decoding: text, as: UTF8.self)
        return .scalar(YAMLScalar(string: string, isNull: ["", "~", "null", "Null", "NULL"].contains(string)), mark)
    }

    // MARK: Quoted scalars

    private mutating func quoted() throws(YAMLSyntaxError) -> YAMLNode {
        let start = mark
        let quote = current!
        advance()
        var text: [UInt8] = []
        while true {
            guard let byte = current else { throw YAMLSyntaxError(mark: start, message: "this quoted value has no closing quote") }
            if byte == quote {
                if quote == UInt8(ascii: "'"), peek() == UInt8(ascii: "'") {
                    text.append(quote)
                    advance()
                    advance()
                    continue
                }
                advance()
                break
            }
            if byte == UInt8(ascii: "\n") {
                throw YAMLSyntaxError(mark: start, message: "a quoted value must end on the line it starts")
            }
            if quote == UInt8(ascii: "\""), byte == UInt8(ascii: "\\") {
                advance()
                try escape(into: &text)
                continue
            }
            text.append(byte)
            advance()
        }
        return .scalar(YAMLScalar(string: String(decoding: text, as: UTF8.self), isNull: false), start)
    }

    private mutating func escape(into text: inout [UInt8]) throws(YAMLSyntaxError) {
        guard let byte = current else { throw YAMLSyntaxError(mark: mark, message: "an escape (\\) ends the file") }
        let simple: [UInt8: UInt8] = [
            UInt8(ascii: "n"): 10, UInt8(ascii: "t"): 9, UInt8(ascii: "r"): 13, UInt8(ascii: "0"): 0, UInt8(ascii: "\""): 34,
            UInt8(ascii: "\\"): 92, UInt8(ascii: "/"): 47, UInt8(ascii: " "): 32, UInt8(ascii: "e"): 27, UInt8(ascii: "a"): 7,
            UInt8(ascii: "b"): 8, UInt8(ascii: "f"): 12, UInt8(ascii: "v"): 11,
        ]
        if let value = simple[byte] {
            text.append(value)
            advance()
            return
        }
        let digits: Int
        switch byte {
        case UInt8(ascii: "x"): digits = 2
        case UInt8(ascii: "u"): digits = 4
        case UInt8(ascii: "U"): digits = 8
        default: throw YAMLSyntaxError(mark: mark, message: "unknown escape \\\(Character(UnicodeScalar(byte)))")
        }
        let escapeMark = mark
        advance()
        var value: UInt32 = 0
        for _ in 0..<digits {
            guard let digit = current, let nibble = UInt32(String(UnicodeScalar(digit)), radix: 16) else {
                throw YAMLSyntaxError(mark: escapeMark, message: "\\\(Character(UnicodeScalar(byte))) needs \(digits) hexadecimal digits")
            }
            value = value << 4 | nibble
            advance()
        }
        guard let scalar = UnicodeScalar(value) else { throw YAMLSyntaxError(mark: escapeMark, message: "not a Unicode character") }
        text.append(contentsOf: Array(String(Character(scalar)).utf8))
    }

    // MARK: Flow context

    /// Spaces, line ends and comments between flow items.
    private mutating func skipFlowSpace() {
        while let byte = current {
            if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
                advance()
            } else if byte == UInt8(ascii: "#") {
                while let comment = current, comment != UInt8(ascii: "\n") { advance() }
            } else {
                return
            }
        }
    }

    private mutating func flowNode() throws(YAMLSyntaxError) -> YAMLNode {
        try refuseUnsupported()
        switch current {
        case UInt8(ascii: "["): return try flowSequence()
        case UInt8(ascii: "{"): return try flowMapping()
        case UInt8(ascii: "\""), UInt8(ascii: "'"): return try quoted()
        default:
            let start = mark
            var text: [UInt8] = []
            while let byte = current, byte != UInt8(ascii: ","), byte != UInt8(ascii: "]"), byte != UInt8(ascii: "}"),
                byte != UInt8(ascii: "\n"), byte != UInt8(ascii: "\r")
            {
                if byte == UInt8(ascii: ":"), isSpaceOrEnd(peek()) || peek() == UInt8(ascii: ",") { break }
                if byte == UInt8(ascii: "#"), text.last == UInt8(ascii: " ") { break }
                text.append(byte)
                advance()
            }
            return plain(text, start)
        }
    }

    private mutating func flowSequence() throws(YAMLSyntaxError) -> YAMLNode {
        let start = mark
        advance()  // "["
        var items: [YAMLNode] = []
        skipFlowSpace()
        while current != UInt8(ascii: "]") {
            guard !atEnd else { throw YAMLSyntaxError(mark: start, message: "this list has no closing ']'") }
            items.append(try flowNode())
            skipFlowSpace()
            guard !atEnd else { throw YAMLSyntaxError(mark: start, message: "this list has no closing ']'") }
            if current == UInt8(ascii: ",") {
                advance()
                skipFlowSpace()
            } else if current != UInt8(ascii: "]") {
                throw YAMLSyntaxError(mark: mark, message: "expected ',' or ']' in this list")
            }
        }
        advance()  // "]"
        return .sequence(items, start)
    }

    private mutating func flowMapping() throws(YAMLSyntaxError) -> YAMLNode {
        let start = mark
        advance()  // "{"
        var entries: [(key: YAMLNode, value: YAMLNode)] = []
        var seen: Set<String> = []
        skipFlowSpace()
        while current != UInt8(ascii: "}") {
            guard !atEnd else { throw YAMLSyntaxError(mark: start, message: "this mapping has no closing '}'") }
            let key = try flowNode()
            if let name = key.scalar?.string, !seen.insert(name).inserted {
                throw YAMLSyntaxError(mark: key.mark ?? start, message: "duplicated key \(name); give each key once")
            }
            skipFlowSpace()
            var value = YAMLNode.scalar(YAMLScalar(string: "", isNull: true), mark)
            if current == UInt8(ascii: ":") {
                advance()
                skipFlowSpace()
                value = .scalar(YAMLScalar(string: "", isNull: true), mark)
                if current != UInt8(ascii: ","), current != UInt8(ascii: "}") { value = try flowNode() }
                skipFlowSpace()
            }
            entries.append((key, value))
            guard !atEnd else { throw YAMLSyntaxError(mark: start, message: "this mapping has no closing '}'") }
            if current == UInt8(ascii: ",") {
                advance()
                skipFlowSpace()
            } else if current != UInt8(ascii: "}") {
                throw YAMLSyntaxError(mark: mark, message: "expected ',' or '}' in this mapping")
            }
        }
        advance()  // "}"
        return .mapping(entries, start)
    }
}
