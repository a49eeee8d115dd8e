import FoundationEssentials
import NIOCore
import SallyportAuth

#if canImport(Glibc)
import Glibc
#endif

/// How username/password logins are checked.
public struct AuthenticationSettings: Sendable, Hashable {
    public var pam = PAMAuthenticator.Configuration()
    public var throttle = LoginThrottle.Configuration()
    /// How long a successful login is remembered (user + keyed hash of the password); 0 turns the
    /// cache off. Cleared on reload.
    public var cacheTTL: TimeAmount = .seconds(30)
    /// `auth.file`: the user file's path as resolved (relative to the configuration's directory),
    /// and its accounts as read at load (and again at each reload).
    public var file: String?
    public var users: UserFile?
    /// A failed login against the user file is answered this long after its check began.
    public var failDelay: TimeAmount = .seconds(1)
    /// Things worth saying about the user file (readable by everyone).
    var warnings: [String] = []

    public init() {}
}

/// What checks a listener's username/password logins.
public enum LoginChecker: String, Sendable, Hashable {
    case pam, file
}

extension AuthenticationSettings {
    mutating func read(_ section: inout ConfigSection) {
        section.durationOrZero("cache_ttl", into: &cacheTTL)
        section.durationOrZero("fail_delay", into: &failDelay)
        if let node = section.node("file"), let path = ConfigValues.scalar(node, section.keyPath("file"), section.problems) {
            let resolved = section.problems.resolve(path)
            file = resolved
            switch Self.readUserFile(resolved) {
            case .success(let (users, warning)):
                self.users = users
                if let warning { warnings.append(warning) }
            case .failure(let error):
                for message in error.messages { section.report(node, "file", message) }
            }
        }
        section.section("pam") { pam in
            if let service = pam.value("service", { service in
                service.isEmpty || service.contains("/")
                    ? .failure(ConfigValues.Message("'\(service)' is not a PAM service name (a file name in /etc/pam.d)")) : .success(service)
            }) {
                self.pam.service = service
            }
            pam.integer("threads", range: 1...256, into: &self.pam.threads)
            pam.integer("max_pending", range: 1...100_000, into: &self.pam.maxPending)
            pam.integer("max_pending_per_client", range: 1...100_000, into: &self.pam.maxPendingPerClient)
        }
        section.section("throttle") { throttle in
            throttle.integer("max_failures", range: 0...1_000_000, into: &self.throttle.maxFailures)
            throttle.duration("window", into: &self.throttle.window)
            throttle.duration("backoff", into: &self.throttle.backoff)
            throttle.duration("max_backoff", into: &self.throttle.maxBackoff)
        }
    }

    /// Reads a user file: its accounts, and a warning when everyone may read it; or what is wrong
    /// (the first few bad lines, each as `path:line: message`).
    public static func readUserFile(_ path: String) -> Result<(UserFile, String?), UserFileError> {
        if let problem = regularFileProblem(path, limit: 64 << 20) { return .failure(UserFileError(messages: [problem])) }
        guard let data = FileManager.default.contents(atPath: path) else {
            return .failure(UserFileError(messages: ["cannot read \(path); check the path and its permissions (the server's user must be able to read it)"]))
        }
        switch UserFile.parse(String(decoding: data, as: UTF8.self)) {
        case .success(let users):
            var status = stat()
            let known = stat(path, &status) == 0
            var warnings: [String] = []
            if known, status.st_mode & (S_IWGRP | S_IWOTH) != 0 {
                warnings.append("\(path) is writable by its group or by every user of this host: whoever can write it can add a login; chmod 0640 it (owner root)")
            }
            if known, status.st_mode & S_IROTH != 0 {
                warnings.append("\(path) is readable by every user of this host: its hashes can be guessed offline; chmod 0640 it")
            }
            return .success((users, warnings.isEmpty ? nil : warnings.joined(separator: "; ")))
        case .failure(let problems):
            return .failure(UserFileError(messages: problems.lines.prefix(5).map { "\(path):\($0.line): \($0.message)" }))
        }
    }
}

/// Why a user file cannot be used: each message names the file (and the line).
public struct UserFileError: Error, Sendable, CustomStringConvertible {
    public var messages: [String]
    public var description: String { messages.joined(separator: "\n") }
}
