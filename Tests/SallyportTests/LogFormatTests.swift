import FoundationEssentials
import Logging
import Testing

@testable import Sallyport

/// What a stranger's text can do to a log line: nothing. Controls and everything past ASCII are
/// escaped in both formats, and JSON reads back to the text that was logged.
@Suite(.timeLimit(.minutes(1))) struct LogFormatTests {
    static let hostile = [
        "a\u{85}b", "evil\u{202E}gnp.exe", "x\u{2028}level=error msg=forged", "\u{9B}31m", "e\u{301}", "\u{200B}zero", "bücher", "emoji\u{1F600}",
        "cr\rlf\n", "nul\0",
    ]

    @Test(arguments: hostile)
    func logfmtLinesAreASCIIWithOneLinePerEvent(text: String) {
        let line = LineLogHandler.formatLine(
            format: .logfmt, timestamp: "t", level: .info, message: "session", metadata: ["user": .string(text), "dst": .string(text)])
        #expect(line.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F || $0 == 10 }, "\(line.debugDescription)")
        #expect(line.utf8.filter { $0 == 10 }.count <= 1)
        #expect(line.contains("user=\""), "a value with escapes is quoted")
    }

    @Test(arguments: hostile)
    func jsonLinesAreASCIIAndReadBackToTheText(text: String) throws {
        let line = LineLogHandler.formatLine(format: .json, timestamp: "t", level: .info, message: "session", metadata: ["user": .string(text)])
        #expect(line.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F || $0 == 10 }, "\(line.debugDescription)")
        struct Line: Decodable { var user: String }
        #expect(try JSONDecoder().decode(Line.self, from: Data(line.utf8)).user == text)
    }
}
