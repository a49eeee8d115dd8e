import FoundationEssentials
import SOCKSProtocol
import SallyportPolicy

/// A rule's `to_file`: one destination per line — a host name, a `.domain`, an address or block,
/// or `*` — with `#` comments and blank lines; hosts-file lines (`0.0.0.0 ads.example.com`) give
/// their name. Read at load and at each reload, byte by byte: a million lines take well under a
/// second.
enum DestinationFile {
    struct Failure: Error {
        /// The file's bad lines (line number, message), the first few.
        var lines: [(Int, String)]
        /// Or the file as a whole.
        var reason: String?
    }

    /// At most this many bad lines are reported.
    static let reportedLines = 5

    static func read(_ path: String) -> Result<DestinationList, Failure> {
        if let problem = regularFileProblem(path, limit: 1 << 30) { return .failure(Failure(lines: [], reason: problem)) }
        guard let data = FileManager.default.contents(atPath: path) else {
            return .failure(Failure(lines: [], reason: "cannot read \(path); check the path and its permissions"))
        }
        // About one entry per 24 bytes of file.
        var destinations = DestinationList.Builder(expected: data.count / 24)
        var bad: [(Int, String)] = []
        data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var lineNumber = 0
            var start = 0
            while start < bytes.count, bad.count < reportedLines {
                lineNumber += 1
                var end = start
                while end < bytes.count, bytes[end] != UInt8(ascii: "\n") { end += 1 }
                let next = end + 1
                // The comment goes, then the blanks around what is left.
                var stop = start
                while stop < end, bytes[stop] != UInt8(ascii: "#") { stop += 1 }
                let line = UnsafeRawBufferPointer(rebasing: bytes[start..<stop])
                start = next
                let fields = Self.fields(line)
                guard !fields.isEmpty else { continue }
                // A hosts file: an address, then the name.
                let hostsLine = fields.count == 2 && IPAddress(String(decoding: fields[0], as: UTF8.self)) != nil
                let token = hostsLine ? fields[1] : fields[0]
                guard fields.count == 1 || hostsLine else {
                    bad.append((lineNumber, "'\(String(decoding: line, as: UTF8.self))' holds more than one destination"))
                    continue
                }
                if let destination = Self.destination(token) {
                    destinations.add(destination)
                } else {
                    bad.append((lineNumber, "'\(String(decoding: token, as: UTF8.self))' is not a host name, .domain, address block or *"))
                }
            }
        }
        guard bad.isEmpty else { return .failure(Failure(lines: bad)) }
        return .success(DestinationList(destinations))
    }

    /// The blank-separated fields of a line.
    private static func fields(_ line: UnsafeRawBufferPointer) -> [UnsafeRawBufferPointer] {
        var fields: [UnsafeRawBufferPointer] = []
        var index = 0
        while index < line.count {
            while index < line.count, Self.isBlank(line[index]) { index += 1 }
            let start = index
            while index < line.count, !Self.isBlank(line[index]) { index += 1 }
            if index > start { fields.append(UnsafeRawBufferPointer(rebasing: line[start..<index])) }
        }
        return fields
    }

    private static func isBlank(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r")
    }

    /// One destination, as `to` lists write them: names in lower case.
    private static func destination(_ token: UnsafeRawBufferPointer) -> EgressRule.Destination? {
        if token.count == 1, token[0] == UInt8(ascii: "*") { return .any }
        // Addresses and blocks hold only hex digits, dots, colons and a slash.
        if token.contains(UInt8(ascii: ":")) || token.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "/") }) {
            return CIDR(String(decoding: token, as: UTF8.self)).map { .block($0) }
        }
        let isDomain = token[0] == UInt8(ascii: ".")
        let name = isDomain ? UnsafeRawBufferPointer(rebasing: token[1...]) : token
        guard let text = DestinationName.normalized(name) else { return nil }
        return isDomain ? .domainSuffix(text) : .host(text)
    }
}
