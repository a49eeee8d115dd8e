import NIOCore
import SOCKSProtocol
import SallyportPolicy

#if canImport(Glibc)
import Glibc
#endif

/// A configuration that cannot be used, with every problem found in it.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    /// One problem: where it is and what to do about it.
    public struct Problem: Sendable, Hashable, CustomStringConvertible {
        public var file: String
        public var line: Int?
        public var column: Int?
        /// The key path, as `timeouts.idle` or `listen[1]`; empty for the whole file.
        public var keyPath: String
        public var message: String

        public var description: String {
            var location = file
            if let line {
                location += ":\(line)"
                if let column { location += ":\(column)" }
            }
            return keyPath.isEmpty ? "\(location): \(message)" : "\(location): \(keyPath): \(message)"
        }
    }

    public var problems: [Problem]

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

/// Reads the YAML configuration file, checking every key and value.
public enum ConfigurationLoader {
    /// Reads and checks the file at `path`.
    public static func load(path: String) throws(ConfigurationError) -> ServerConfiguration {
        let text: String
        do {
            text = try readFile(path)
        } catch {
            throw ConfigurationError(problems: [
                .init(file: path, keyPath: "", message: "cannot read the file: \(error); check the path and its permissions")
            ])
        }
        return try parse(yaml: text, file: path)
    }

    /// Checks the configuration in `yaml`; `file` names it in errors.
    public static func parse(yaml: String, file: String) throws(ConfigurationError) -> ServerConfiguration {
        let root: YAMLNode?
        do {
            root = try YAMLComposer.compose(yaml)
        } catch {
            throw ConfigurationError(problems: [
                .init(file: file, line: error.mark.line, column: error.mark.column, keyPath: "", message: "not valid YAML: \(error.message)")
            ])
        }
        let problems = ConfigProblems(file: file)
        var configuration = ServerConfiguration()
        if let root, !ConfigValues.isNull(root) {
            var section = ConfigSection(root, path: "", problems: problems)
            if case .mapping = root {
                configuration.read(&section)
                section.finish()
            } else {
                problems.report(root, "", "expected a mapping of keys, as in conf/sallyport.yaml")
            }
        }
        let findings = configuration.validate()
        for (message, listener) in findings.errors {
            // A listener's problem points at the listener in the file.
            let index = listener.flatMap { configuration.listeners.firstIndex(of: $0) }
            problems.report(line: listener?.line, column: listener?.column, index.map { "listen[\($0)]" } ?? "", message)
        }
        if !problems.problems.isEmpty { throw ConfigurationError(problems: problems.problems) }
        configuration.warnings = findings.warnings.map { "\(file): \($0)" }
        return configuration
    }

    /// Parses `HOST:PORT` (`[V6]:PORT` for IPv6) into a listener; `source` names where it came from.
    public static func parseListenAddress(_ text: String) -> Result<(host: String, port: Int), ListenAddressError> {
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return .failure(ListenAddressError(text: text, reason: "an IPv6 address goes in brackets: [::1]:1080"))
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                return .failure(ListenAddressError(text: text, reason: "expected HOST:PORT, as 127.0.0.1:1080"))
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                return .failure(ListenAddressError(text: text, reason: "an IPv6 address goes in brackets: [::1]:1080"))
            }
        }
        if host == "localhost" { host = "127.0.0.1" }
        guard let port = Int(portText), (0...65535).contains(port) else {
            return .failure(ListenAddressError(text: text, reason: "the port must be a number from 0 to 65535 (0 picks a free port)"))
        }
        guard IPAddress(String(host)) != nil else {
            return .failure(ListenAddressError(text: text, reason: "'\(host)' is not an IP address; use one such as 127.0.0.1 or [::1]"))
        }
        return .success((String(host), port))
    }

    /// Why a listen address was refused.
    public struct ListenAddressError: Error, Sendable, CustomStringConvertible {
        public var text: String
        public var reason: String
        public var description: String { "'\(text)': \(reason)" }
    }

    private static func readFile(_ path: String) throws -> String {
        guard let file = fopen(path, "r") else { throw SystemError(errno: errno) }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count > 0 { bytes.append(contentsOf: chunk[0..<count]) }
            if count < chunk.count {
                if ferror(file) != 0 { throw SystemError(errno: errno) }
                break
            }
            guard bytes.count <= 16 * 1024 * 1024 else { throw SystemError(message: "larger than 16 MiB") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Why `path` is not a file to read whole (a directory, a device such as /dev/zero, a FIFO, or
/// larger than `limit` bytes); nil when it is, or when it does not exist (reading says so then).
func regularFileProblem(_ path: String, limit: Int) -> String? {
    var status = stat()
    guard stat(path, &status) == 0 else { return nil }
    guard status.st_mode & S_IFMT == S_IFREG else { return "\(path) is not a regular file" }
    guard status.st_size <= limit else { return "\(path) is larger than \(limit >> 20) MiB" }
    return nil
}

/// An error from the C library, with its text.
struct SystemError: Error, CustomStringConvertible {
    var description: String

    init(errno code: Int32) { description = String(cString: strerror(code)) }
    init(message: String) { description = message }
}
