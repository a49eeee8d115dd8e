/// Where a node starts in the file: line and column, both from 1.
struct YAMLMark: Hashable, Sendable {
    var line: Int
    var column: Int
}

/// A scalar as written, and whether YAML reads it as null (`~`, `null`, or nothing, unquoted).
struct YAMLScalar: Hashable, Sendable {
    var string: String
    var isNull: Bool
}

/// A node of the configuration file.
indirect enum YAMLNode: Sendable {
    case scalar(YAMLScalar, YAMLMark)
    case mapping([(key: YAMLNode, value: YAMLNode)], YAMLMark)
    case sequence([YAMLNode], YAMLMark)

    var mark: YAMLMark? {
        switch self {
        case .scalar(_, let mark), .mapping(_, let mark), .sequence(_, let mark): return mark
        }
    }

    var scalar: YAMLScalar? {
        if case .scalar(let scalar, _) = self { return scalar }
        return nil
    }
}

/// Why a file is not YAML this reader takes, and where.
struct YAMLSyntaxError: Error, Sendable {
    var mark: YAMLMark
    var message: String
}
