import SallyportTestSupport
import Foundation
import Testing
import Yams

@testable import Sallyport

/// A node as text, marks included: both readers must give the same.
private func describe(_ node: YAMLNode) -> String {
    let mark = node.mark.map { "@\($0.line):\($0.column)" } ?? ""
    switch node {
    case .scalar(let scalar, _): return scalar.isNull ? "~\(mark)" : "\"\(scalar.string)\"\(mark)"
    case .mapping(let entries, _): return "{" + entries.map { "\(describe($0.key)): \(describe($0.value))" }.joined(separator: ", ") + "}\(mark)"
    case .sequence(let items, _): return "[" + items.map(describe).joined(separator: ", ") + "]\(mark)"
    }
}

private func describe(_ node: Yams.Node) -> String {
    let mark = node.mark.map { "@\($0.line):\($0.column)" } ?? ""
    switch node {
    case .scalar(let scalar):
        let null = scalar.tag.description == "tag:yaml.org,2002:null" || (node.null != nil && scalar.style == .plain)
        return null ? "~\(mark)" : "\"\(scalar.string)\"\(mark)"
    case .mapping(let mapping): return "{" + mapping.map { "\(describe($0.key)): \(describe($0.value))" }.joined(separator: ", ") + "}\(mark)"
    case .sequence(let sequence): return "[" + sequence.map(describe).joined(separator: ", ") + "]\(mark)"
    case .alias: return "*alias"
    }
}

/// The configuration reader against Yams, a full YAML implementation: the same tree, the same
/// marks, for every configuration the project has and for the shapes a configuration takes.
@Suite(.timeLimit(.minutes(1))) struct YAMLReaderTests {
    static let snippets = [
        "listen: [127.0.0.1:1080, \"[::1]:1080\"]\nmethods: [username]\n",
        "rules:\n  - name: a\n    action: allow\n    to: [10.0.0.0/8]   # a comment\n  - {name: b, action: deny, to: ['*']}\n",
        "auth:\n  pam:\n    service: sallyport\n  cache_ttl: 30s\n  throttle: {max_failures: 5, window: 1m}\n",
        "a:\n- x\n- y\nb: ~\nc:\nd: null\ne: ''\nf: \"q\\\"uote\\u00e9\"\ng: 'it''s'\n",
        "---\nlisten:\n  - address: 127.0.0.1:1080\n    methods: [none]\n",
        "x: [a, [b, c], {d: e}]\ny: {k: [1, 2], \"q\": v}\n",
        "x: [\n  a,\n  b\n]\n",
        "# only a comment\n",
        "plain: value with spaces   \nurl: http://example.com:8080/path\nhash: a#b\n",
        "list:\n  -\n  - x\n",
        "nested:\n  - - a\n    - b\n  - c\n",
    ]

    static func files() -> [String] {
        let root = packageRoot()
        var paths = [root + "/conf/sallyport.yaml"]
        let corpus = root + "/Tests/Fuzz/Corpus/config"
        paths += ((try? FileManager.default.contentsOfDirectory(atPath: corpus)) ?? []).sorted().map { corpus + "/" + $0 }
        // More inputs to compare, such as a fuzzer's corpus: SALLYPORT_YAML_CORPUS=DIR.
        if let extra = ProcessInfo.processInfo.environment["SALLYPORT_YAML_CORPUS"] {
            paths += ((try? FileManager.default.contentsOfDirectory(atPath: extra)) ?? []).sorted().map { extra + "/" + $0 }
        }
        return paths
    }

    @Test func givesYamsTreesAndMarksForEveryConfigurationAndShape() throws {
        var inputs = Self.snippets.map { ($0, "snippet") }
        for path in Self.files() { if let text = try? String(contentsOfFile: path, encoding: .utf8) { inputs.append((text, path)) } }
        var compared = 0
        for (text, source) in inputs {
            // Refused by Yams (a syntax error), or read: a tree, or nil for an empty document.
            let yams = Result { try Yams.compose(yaml: text) }
            let ours: YAMLNode?
            do {
                ours = try YAMLReader.compose(text)
            } catch {
                // Ours refuses what Yams reads only where it says the feature is not supported
                // (anchors, aliases, tags, block scalars, complex keys), at the feature's mark.
                #expect((try? yams.get()) == nil || error.message.contains("not supported here"), "\(source): refused (\(error.message) at \(error.mark)) what Yams reads")
                continue
            }
            guard case .success(let read) = yams else {
                Issue.record("\(source): read, but Yams refuses it: \(ours.map(describe) ?? "nil")")
                continue
            }
            guard let theirs = read else {
                #expect(ours == nil, "\(source): Yams reads an empty document")
                continue
            }
            compared += 1
            #expect(ours.map(describe) ?? "nil" == describe(theirs), "\(source)")
        }
        #expect(compared >= Self.snippets.count)
    }

    @Test func errorsNameTheLineAndColumn() {
        for (text, line, column, message) in [
            ("a: [b, c\n", 1, 4, "no closing ']'"),
            ("a: 'b\n", 1, 4, "must end on the line"),
            ("a: 1\na: 2\n", 2, 1, "duplicated key a"),
            ("a: &x 1\n", 1, 4, "anchors"),
            ("a: |\n  b\n", 1, 4, "block scalars"),
            ("a:\n  b: 1\n   c: 2\n", 3, 4, "indented more"),
        ] {
            do {
                _ = try YAMLReader.compose(text)
                Issue.record("\(text) was read")
            } catch {
                #expect(error.mark == YAMLMark(line: line, column: column), "\(text): \(error)")
                #expect(error.message.contains(message), "\(text): \(error.message)")
            }
        }
    }
}
