import CYAML

/// Reads a configuration file through libyaml (Debian's libyaml-0-2): full YAML 1.1 — block and
/// flow collections, every scalar style (block scalars `|` and `>` included), anchors and aliases,
/// merge keys (`<<: *defaults`), the standard tags — composed into `YAMLNode`s with each node's
/// line and column. One document; keys are scalars, each given once per mapping; aliases may not
/// expand past `maximumNodes` (a file of nested aliases otherwise grows without bound).
struct YAMLComposer {
    /// Nodes a document may hold once its aliases are expanded.
    static let maximumNodes = 10_000_000

    private var parser: UnsafeMutablePointer<yaml_parser_t>
    /// Anchored nodes by name, with their size in nodes.
    private var anchors: [String: (node: YAMLNode, size: Int)] = [:]
    private var nodes = 0

    private init(parser: UnsafeMutablePointer<yaml_parser_t>) { self.parser = parser }

    /// The document's root, or nil for a file with no content.
    static func compose(_ text: String) throws(YAMLSyntaxError) -> YAMLNode? {
        let parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
        defer { parser.deallocate() }
        guard yaml_parser_initialize(parser) == 1 else { throw YAMLSyntaxError(mark: YAMLMark(line: 1, column: 1), message: "out of memory") }
        defer { yaml_parser_delete(parser) }
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { (buffer) throws(YAMLSyntaxError) -> YAMLNode? in
            yaml_parser_set_input_string(parser, buffer.baseAddress, buffer.count)
            yaml_parser_set_encoding(parser, YAML_UTF8_ENCODING)
            var composer = YAMLComposer(parser: parser)
            return try composer.document()
        }
    }

    // MARK: Events

    /// One libyaml event, copied out of the parser's memory.
    private enum Event {
        case streamStart, streamEnd, documentStart, documentEnd, sequenceEnd, mappingEnd
        case scalar(String, plain: Bool, tag: String?, anchor: String?, YAMLMark)
        case sequenceStart(tag: String?, anchor: String?, YAMLMark)
        case mappingStart(tag: String?, anchor: String?, YAMLMark)
        case alias(String, YAMLMark)
    }

    private mutating func next() throws(YAMLSyntaxError) -> (Event, YAMLMark) {
        var event = yaml_event_t()
        guard yaml_parser_parse(parser, &event) == 1 else { throw parseError() }
        defer { yaml_event_delete(&event) }
        let mark = YAMLMark(line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
        func text(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? { pointer.map { String(cString: $0) } }
        switch event.type {
        case YAML_STREAM_START_EVENT: return (.streamStart, mark)
        case YAML_STREAM_END_EVENT: return (.streamEnd, mark)
        case YAML_DOCUMENT_START_EVENT: return (.documentStart, mark)
        case YAML_DOCUMENT_END_EVENT: return (.documentEnd, mark)
        case YAML_SEQUENCE_END_EVENT: return (.sequenceEnd, mark)
        case YAML_MAPPING_END_EVENT: return (.mappingEnd, mark)
        case YAML_ALIAS_EVENT: return (.alias(text(event.data.alias.anchor) ?? "", mark), mark)
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let value = scalar.value.map { String(decoding: UnsafeBufferPointer(start: $0, count: scalar.length), as: UTF8.self) } ?? ""
            let plain = scalar.style == YAML_PLAIN_SCALAR_STYLE
            return (.scalar(value, plain: plain, tag: text(scalar.tag), anchor: text(scalar.anchor), mark), mark)
        case YAML_SEQUENCE_START_EVENT:
            return (.sequenceStart(tag: text(event.data.sequence_start.tag), anchor: text(event.data.sequence_start.anchor), mark), mark)
        case YAML_MAPPING_START_EVENT:
            return (.mappingStart(tag: text(event.data.mapping_start.tag), anchor: text(event.data.mapping_start.anchor), mark), mark)
        default:
            throw YAMLSyntaxError(mark: mark, message: "unexpected event \(event.type.rawValue)")
        }
    }

    private func parseError() -> YAMLSyntaxError {
        let parser = self.parser.pointee
        let problem = parser.problem.map { String(cString: $0) } ?? "cannot be read"
        let context = parser.context.map { " " + String(cString: $0) } ?? ""
        var message = problem + context
        if parser.context != nil {
            message += " started at line \(parser.context_mark.line + 1), column \(parser.context_mark.column + 1)"
        }
        let mark = parser.problem_mark
        return YAMLSyntaxError(mark: YAMLMark(line: Int(mark.line) + 1, column: Int(mark.column) + 1), message: message)
    }

    // MARK: Composing

    private mutating func document() throws(YAMLSyntaxError) -> YAMLNode? {
        guard case (.streamStart, _) = try next() else { return nil }
        let (first, firstMark) = try next()
        guard case .documentStart = first else { return nil }
        let (event, mark) = try next()
        let root = try node(event, mark)
        guard case (.documentEnd, _) = try next() else { throw YAMLSyntaxError(mark: mark, message: "the document does not end here") }
        if case (.documentStart, let second) = try next() {
            throw YAMLSyntaxError(mark: second, message: "a second document: the configuration is one document (remove the '---' after line \(firstMark.line))")
        }
        // An empty file is one document holding an empty plain scalar.
        if case .scalar(let scalar, _) = root, scalar.isNull, scalar.string.isEmpty { return nil }
        return root
    }

    private mutating func node(_ event: Event, _ mark: YAMLMark) throws(YAMLSyntaxError) -> YAMLNode {
        try count(1, at: mark)
        switch event {
        case .scalar(let value, let plain, let tag, let anchor, let mark):
            try check(tag, at: mark)
            let null = tag == "tag:yaml.org,2002:null" || (tag == nil && plain && ["", "~", "null", "Null", "NULL"].contains(value))
            return remember(.scalar(YAMLScalar(string: value, isNull: null), mark), anchor: anchor, size: 1)
        case .alias(let name, let mark):
            guard let anchored = anchors[name] else {
                throw YAMLSyntaxError(mark: mark, message: "alias *\(name) names no anchor (&\(name)) before it")
            }
            try count(anchored.size - 1, at: mark)
            return anchored.node
        case .sequenceStart(let tag, let anchor, let mark):
            try check(tag, at: mark)
            let start = nodes
            var items: [YAMLNode] = []
            while true {
                let (item, itemMark) = try next()
                if case .sequenceEnd = item { break }
                items.append(try node(item, itemMark))
            }
            return remember(.sequence(items, mark), anchor: anchor, size: nodes - start + 1)
        case .mappingStart(let tag, let anchor, let mark):
            try check(tag, at: mark)
            let start = nodes
            let entries = try mapping()
            return remember(.mapping(entries, mark), anchor: anchor, size: nodes - start + 1)
        case .streamStart, .streamEnd, .documentStart, .documentEnd, .sequenceEnd, .mappingEnd:
            throw YAMLSyntaxError(mark: mark, message: "unexpected here")
        }
    }

    /// A mapping's entries up to its end: scalar keys, each once; merge keys (`<<`) add the
    /// entries of the mappings they name that the mapping does not give itself.
    private mutating func mapping() throws(YAMLSyntaxError) -> [(key: YAMLNode, value: YAMLNode)] {
        var entries: [(key: YAMLNode, value: YAMLNode)] = []
        var given: Set<String> = []
        var merged: [(key: YAMLNode, value: YAMLNode)] = []
        while true {
            let (keyEvent, keyMark) = try next()
            if case .mappingEnd = keyEvent { break }
            let key = try node(keyEvent, keyMark)
            let (valueEvent, valueMark) = try next()
            let value = try node(valueEvent, valueMark)
            guard case .scalar(let name, _) = key else {
                throw YAMLSyntaxError(mark: keyMark, message: "a key must be a plain value, not a list or mapping")
            }
            if case .scalar(_, plain: true, tag: nil, _, _) = keyEvent, name.string == "<<" {
                merged += try Self.mergeSources(value, at: valueMark)
                continue
            }
            guard given.insert(name.string).inserted else {
                throw YAMLSyntaxError(mark: keyMark, message: "duplicated key \(name.string); give each key once")
            }
            entries.append((key, value))
        }
        // The first merged mapping that gives a key wins; the mapping's own keys win over all.
        for entry in merged {
            guard case .scalar(let name, _) = entry.key, given.insert(name.string).inserted else { continue }
            entries.append(entry)
        }
        return entries
    }

    private static func mergeSources(_ value: YAMLNode, at mark: YAMLMark) throws(YAMLSyntaxError) -> [(key: YAMLNode, value: YAMLNode)] {
        switch value {
        case .mapping(let entries, _): return entries
        case .sequence(let items, _):
            var all: [(key: YAMLNode, value: YAMLNode)] = []
            for item in items {
                guard case .mapping(let entries, _) = item else { throw notMergeable(at: mark) }
                all += entries
            }
            return all
        case .scalar: throw notMergeable(at: mark)
        }
    }

    private static func notMergeable(at mark: YAMLMark) -> YAMLSyntaxError {
        YAMLSyntaxError(mark: mark, message: "a merge key (<<) takes a mapping or a list of mappings, as <<: *defaults")
    }

    private mutating func remember(_ node: YAMLNode, anchor: String?, size: Int) -> YAMLNode {
        if let anchor { anchors[anchor] = (node, size) }
        return node
    }

    private mutating func count(_ added: Int, at mark: YAMLMark) throws(YAMLSyntaxError) {
        nodes += added
        if nodes > Self.maximumNodes {
            throw YAMLSyntaxError(mark: mark, message: "aliases expand the document past \(Self.maximumNodes) nodes")
        }
    }

    /// Standard tags only (`!!str`, `!!int`, ...): a configuration has no use for its own.
    private func check(_ tag: String?, at mark: YAMLMark) throws(YAMLSyntaxError) {
        guard let tag, !tag.hasPrefix("tag:yaml.org,2002:") else { return }
        throw YAMLSyntaxError(mark: mark, message: "tag \(tag) is not a standard YAML tag (!!str, !!int, ...)")
    }
}
