/// The accounts of a user file: one `name:hash[:group,group...]` per line, `#` comments and blank
/// lines between. Hashes are crypt(3) strings (see `PasswordHash`).
public struct UserFile: Sendable, Hashable {
    public struct Account: Sendable, Hashable {
        public var hash: String
        public var groups: [String]
    }

    /// By user name.
    public private(set) var accounts: [String: Account]
    /// The hash an unknown user's password is checked against, so that an unknown user costs what
    /// a wrong password does: one of the most common method and cost in the file.
    public private(set) var decoyHash: String?

    /// A bad line: its number and what is wrong with it.
    public struct Problem: Error, Sendable, Hashable {
        public var line: Int
        public var message: String
    }

    public init(accounts: [String: Account] = [:]) {
        self.init(accounts: accounts, order: accounts.keys.sorted())
    }

    /// `order`: the users as the file lists them, for the decoy's tie-break.
    init(accounts: [String: Account], order: [String]) {
        self.accounts = accounts
        decoyHash = Self.decoy(for: order.compactMap { accounts[$0]?.hash })
    }

    /// Every bad line of a file.
    public struct Problems: Error, Sendable {
        public var lines: [Problem]
    }

    /// What is wrong with one line.
    struct LineError: Error {
        var message: String
    }

    /// Reads the file's text; every bad line is reported.
    public static func parse(_ text: String) -> Result<UserFile, Problems> {
        var accounts: [String: Account] = [:]
        var order: [String] = []
        var problems: [Problem] = []
        for (index, line) in lines(of: text).enumerated() {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            switch parseLine(String(line)) {
            case .success(let (name, account)):
                if accounts[name] != nil {
                    problems.append(Problem(line: index + 1, message: "user '\(name)' is already defined above; keep one line per user"))
                } else {
                    accounts[name] = account
                    order.append(name)
                }
            case .failure(let error):
                problems.append(Problem(line: index + 1, message: error.message))
            }
        }
        guard problems.isEmpty else { return .failure(Problems(lines: problems)) }
        return .success(UserFile(accounts: accounts, order: order))
    }

    /// One account line.
    static func parseLine(_ line: String) -> Result<(String, Account), LineError> {
        let fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard fields.count == 2 || fields.count == 3 else {
            return .failure(LineError(message: "expected name:hash or name:hash:group,group (\(fields.count) field(s) separated by ':')"))
        }
        let name = fields[0]
        if let problem = nameProblem(name) { return .failure(LineError(message: problem)) }
        let hash = fields[1]
        if let problem = PasswordHash.problem(with: hash) { return .failure(LineError(message: "user '\(name)': \(problem)")) }
        var groups: [String] = []
        if fields.count == 3, !fields[2].isEmpty {
            for group in fields[2].split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
                if let problem = groupProblem(group) { return .failure(LineError(message: "user '\(name)': \(problem)")) }
                if !groups.contains(group) { groups.append(group) }
            }
        }
        return .success((name, Account(hash: hash, groups: groups)))
    }

    /// Why a user name cannot be in the file: RFC 1929 allows 1 to 255 bytes; the file's own
    /// separators and blanks are out.
    public static func nameProblem(_ name: String) -> String? {
        guard !name.isEmpty, name.utf8.count <= 255 else { return "a user name is 1 to 255 bytes long" }
        guard !name.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F || $0 == UInt8(ascii: ":") }), !name.hasPrefix("#") else {
            return "user name '\(name)' holds a blank, a control character or ':' (or starts with '#')"
        }
        return nil
    }

    public static func groupProblem(_ group: String) -> String? {
        guard !group.isEmpty, !group.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ",") }) else {
            return "group '\(group)' is empty or holds a blank, a control character, ':' or ','"
        }
        return nil
    }

    /// The method and cost of a hash (`$y$j9T$`, `$2b$12$`, `$6$rounds=10000$`): hashes of one
    /// class cost the same to check.
    static func costClass(_ hash: String) -> Substring {
        let parts = hash.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count >= 4 else { return Substring(hash) }
        switch parts[1] {
        case "5", "6": return parts[2].hasPrefix("rounds=") ? hash.prefix(parts[1].count + parts[2].count + 3) : hash.prefix(parts[1].count + 2)
        default: return hash.prefix(parts[1].count + parts[2].count + 3)
        }
    }

    /// One hash of the most common class (the first such in the file).
    static func decoy(for hashes: [String]) -> String? {
        let usable = hashes.filter { !PasswordHash.isLocked($0) }
        var counts: [Substring: Int] = [:]
        for hash in usable { counts[costClass(hash), default: 0] += 1 }
        guard let best = counts.values.max() else { return nil }
        return usable.first { counts[costClass($0)] == best }
    }

    // MARK: Editing, for `sallyport passwd`: other lines, comments included, stay as they are.

    /// `text` with the user's line set to `hash` (and `groups`, or the groups it had when nil);
    /// appended when the user has no line yet.
    public static func setting(user: String, hash: String, groups: [String]?, in text: String) -> String {
        var lines = lines(of: text)
        for (index, line) in lines.enumerated() {
            guard case .success(let (name, account)) = parseLine(line), name == user else { continue }
            lines[index] = render(user, Account(hash: hash, groups: groups ?? account.groups))
            return lines.joined(separator: "\n") + "\n"
        }
        lines.append(render(user, Account(hash: hash, groups: groups ?? [])))
        return lines.joined(separator: "\n") + "\n"
    }

    /// `text` without the user's line; nil when there is none.
    public static func removing(user: String, from text: String) -> String? {
        let lines = lines(of: text)
        let kept = lines.filter { line in
            if case .success(let (name, _)) = parseLine(line), name == user { return false }
            return true
        }
        guard kept.count < lines.count else { return nil }
        return kept.isEmpty ? "" : kept.joined(separator: "\n") + "\n"
    }

    /// The lines of a file, split at each LF (a CR before it goes too); no last empty line.
    static func lines(of text: String) -> [String] {
        var lines = text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { line in
            String(decoding: line.last == UInt8(ascii: "\r") ? line.dropLast() : line, as: UTF8.self)
        }
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    static func render(_ name: String, _ account: Account) -> String {
        account.groups.isEmpty ? "\(name):\(account.hash)" : "\(name):\(account.hash):\(account.groups.joined(separator: ","))"
    }
}
