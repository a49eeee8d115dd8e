import SallyportTestSupport
import Foundation
import Testing

@testable import Sallyport

/// A node as text, marks included.
private func describe(_ node: YAMLNode?) -> String {
    guard let node else { return "nil" }
    let mark = node.mark.map { "@\($0.line):\($0.column)" } ?? ""
    switch node {
    case .scalar(let scalar, _): return scalar.isNull ? "~\(mark)" : "\"\(scalar.string)\"\(mark)"
    case .mapping(let entries, _): return "{" + entries.map { "\(describe($0.key)): \(describe($0.value))" }.joined(separator: ", ") + "}\(mark)"
    case .sequence(let items, _): return "[" + items.map(describe).joined(separator: ", ") + "]\(mark)"
    }
}

/// The configuration file through libyaml: trees and marks of the shapes a configuration takes,
/// the full-YAML features people paste (block scalars, anchors, merge keys), and errors that name
/// the line and column.
@Suite(.timeLimit(.minutes(1))) struct YAMLComposerTests {
    @Test(arguments: [
        ("listen: [127.0.0.1:1080, \"[::1]:1080\"]\n", #"{"listen"@1:1: ["127.0.0.1:1080"@1:10, "[::1]:1080"@1:26]@1:9}@1:1"#),
        ("a:\n- x\n- y\nb: ~\nc:\nd: null\ne: ''\nf: \"q\\\"uote\\u00e9\"\ng: 'it''s'\n",
         #"{"a"@1:1: ["x"@2:3, "y"@3:3]@2:1, "b"@4:1: ~@4:4, "c"@5:1: ~@5:3, "d"@6:1: ~@6:4, "e"@7:1: ""@7:4, "f"@8:1: "q"uoteé"@8:4, "g"@9:1: "it's"@9:4}@1:1"#),
        ("---\nx: [a, [b, c], {d: e}]\n", #"{"x"@2:1: ["a"@2:5, ["b"@2:9, "c"@2:12]@2:8, {"d"@2:17: "e"@2:20}@2:16]@2:4}@2:1"#),
        ("# only a comment\n", "nil"),
        ("", "nil"),
        ("plain: value with spaces   \nhash: a#b\n", #"{"plain"@1:1: "value with spaces"@1:8, "hash"@2:1: "a#b"@2:7}@1:1"#),
        ("list:\n  -\n  - x\n", #"{"list"@1:1: [~@2:4, "x"@3:5]@2:3}@1:1"#),
        ("quoted: \"null\"\ntagged: !!str null\nnulled: !!null x\n", #"{"quoted"@1:1: "null"@1:9, "tagged"@2:1: "null"@2:9, "nulled"@3:1: ~@3:9}@1:1"#),
    ])
    func composesTheTreeWithItsMarks(text: String, expected: String) throws {
        let got = describe(try YAMLComposer.compose(text))
        #expect(got == expected, "got \(got)")
    }

    @Test func blockScalarsKeepTheirLinesOrFoldThem() throws {
        let text = "literal: |\n  line one\n  line two\nfolded: >\n  one\n  two\n"
        #expect(describe(try YAMLComposer.compose(text)) == #"{"literal"@1:1: "line one\#nline two\#n"@1:10, "folded"@4:1: "one two\#n"@4:9}@1:1"#)
    }

    @Test func aliasesRepeatTheAnchoredNodeAndMergeKeysFillInWhatAMappingLacks() throws {
        let text = """
            defaults: &d {action: allow, to: [10.0.0.0/8]}
            rules:
              - <<: *d
                name: a
              - <<: *d
                name: b
                action: deny
            """
        let root = try #require(try YAMLComposer.compose(text))
        guard case .mapping(let top, _) = root, case .sequence(let rules, _) = top[1].value else { Issue.record("not a list: \(describe(root))"); return }
        #expect(rules.map(describe) == [
            #"{"name"@4:5: "a"@4:11, "action"@1:15: "allow"@1:23, "to"@1:30: ["10.0.0.0/8"@1:35]@1:34}@3:5"#,
            #"{"name"@6:5: "b"@6:11, "action"@7:5: "deny"@7:13, "to"@1:30: ["10.0.0.0/8"@1:35]@1:34}@5:5"#,
        ])
        // What the server reads from it: the merged rules (a top-level x- key holds the anchor).
        let configuration = try ConfigurationLoader.parse(yaml: text.replacingOccurrences(of: "defaults:", with: "x-defaults:"), file: "merge.yaml")
        #expect(configuration.policy.rules.map(\.name) == ["a", "b"])
        #expect(configuration.policy.rules.map(\.action) == [.allow, .deny])
        #expect(configuration.policy.rules.allSatisfy { $0.to?.count == 1 })
        // Elsewhere an unknown key is still one.
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.parse(yaml: "timeouts: {x-a: 1}\n", file: "t.yaml") }
    }

    @Test func errorsNameTheLineAndColumn() {
        for (text, line, column, message) in [
            ("a: [b, c\n", 2, 1, "did not find expected ',' or ']' while parsing a flow sequence started at line 1, column 4"),
            ("a: 'b\n", 2, 1, "found unexpected end of stream while scanning a quoted scalar"),
            ("a: 1\na: 2\n", 2, 1, "duplicated key a"),
            ("a:\n  b: 1\n   c: 2\n", 3, 5, "mapping values are not allowed in this context"),
            ("a: *nowhere\n", 1, 4, "alias *nowhere names no anchor"),
            ("a: 1\n---\nb: 2\n", 2, 1, "a second document"),
            ("a: !custom x\n", 1, 4, "tag !custom is not a standard YAML tag"),
            ("? [a, b]\n: c\n", 1, 3, "a key must be a plain value"),
            ("a: {<<: [x]}\n", 1, 9, "a merge key (<<) takes a mapping"),
        ] {
            do {
                _ = try YAMLComposer.compose(text)
                Issue.record("\(text) was read")
            } catch {
                #expect(error.mark == YAMLMark(line: line, column: column), "\(text): \(error)")
                #expect(error.message.contains(message), "\(text): \(error.message)")
            }
        }
    }

    @Test func aliasesCannotExpandWithoutBound() {
        // Nine levels of ten: 10^9 nodes once expanded, from a file of a few hundred bytes.
        var text = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...9 {
            text += "l\(level): &l\(level) [" + Array(repeating: "*l\(level - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        do {
            _ = try YAMLComposer.compose(text)
            Issue.record("the aliases were expanded")
        } catch {
            #expect(error.message.contains("aliases expand the document past"), "\(error.message)")
        }
    }

    @Test func everyConfigurationTheProjectShipsIsRead() throws {
        let root = packageRoot()
        var paths = [root + "/conf/sallyport.yaml"]
        let corpus = root + "/Tests/Fuzz/Corpus/config"
        paths += ((try? FileManager.default.contentsOfDirectory(atPath: corpus)) ?? []).sorted().map { corpus + "/" + $0 }
        for path in paths {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            #expect(throws: Never.self, "\(path)") { _ = try YAMLComposer.compose(text) }
        }
        #expect(paths.count > 3)
    }
}
