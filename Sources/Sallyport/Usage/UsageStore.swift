import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// The state file of the usage totals in `state_dir`: `usage.json`, and `usage.json.prev`, the
/// snapshot before it. Saved atomically; a file that does not read is moved aside and the previous
/// snapshot taken instead.
enum UsageStore {
    static func file(in directory: String) -> String { directory + "/usage.json" }
    static func previous(in directory: String) -> String { directory + "/usage.json.prev" }

    /// What loading found: the book, and what the log should say.
    struct Loaded {
        var book = UsageBook()
        var errors: [String] = []
        var notes: [String] = []
        /// Saved totals existed but none could be read: starting from zero would forget what
        /// each user used (with quotas, fail open).
        var lost = false
    }

    /// Loads the totals. `keepCorrupt`: leave an unreadable file where it is when no snapshot
    /// can replace it (the caller refuses to start; a later start must not find it gone and
    /// begin from zero).
    static func load(from directory: String, now: String, keepCorrupt: Bool = false) -> Loaded {
        var loaded = Loaded()
        let (path, previous) = (file(in: directory), previous(in: directory))
        switch read(path) {
        case .success(let book?):
            loaded.book = book
            loaded.notes.append("usage totals loaded from \(path) (\(book.users.count) user(s))")
            return loaded
        case .success(nil):
            break
        case .failure(let reason):
            if keepCorrupt, case .success(nil) = read(previous) {
                loaded.errors.append("the usage state file \(path) is corrupt (\(reason)) and there is no previous snapshot \(previous)")
                loaded.lost = true
                return loaded
            }
            if keepCorrupt, case .failure(let second) = read(previous) {
                loaded.errors.append("the usage state file \(path) is corrupt (\(reason)), and so is the previous snapshot \(previous) (\(second))")
                loaded.lost = true
                return loaded
            }
            let aside = "\(path).corrupt-\(now)"
            let moved = rename(path, aside) == 0
            loaded.errors.append(
                "the usage state file \(path) is corrupt (\(reason)); \(moved ? "moved it to \(aside)" : "could not move it aside"), using the previous snapshot \(previous)")
        }
        switch read(previous) {
        case .success(let book?):
            loaded.book = book
            loaded.notes.append("usage totals loaded from the previous snapshot \(previous) (\(book.users.count) user(s))")
        case .success(nil):
            if !loaded.errors.isEmpty { loaded.errors.append("there is no previous snapshot \(previous): usage totals start from zero") }
        case .failure(let reason):
            loaded.errors.append("the previous snapshot \(previous) does not read either (\(reason)): usage totals start from zero")
        }
        return loaded
    }

    /// The book in `path`; nil when there is no file.
    static func read(_ path: String) -> Result<UsageBook?, StoreError> {
        guard let data = FileManager.default.contents(atPath: path) else {
            return access(path, F_OK) == 0 ? .failure(StoreError("cannot read it; check its permissions")) : .success(nil)
        }
        do {
            let book = try JSONDecoder().decode(UsageBook.self, from: data)
            guard book.isWellFormed else { return .failure(StoreError("its totals do not add up")) }
            return .success(book)
        } catch {
            return .failure(StoreError("not a usage snapshot: \(error)"))
        }
    }

    /// Writes `book`, keeping the file it replaces as the previous snapshot.
    static func save(_ book: UsageBook, to directory: String) throws(AtomicFileError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(book)) ?? Data("{}".utf8)
        try AtomicFile.write(Array(data) + [UInt8(ascii: "\n")], to: file(in: directory), mode: 0o640, previous: previous(in: directory))
    }

    /// Makes `directory` if it is missing (0750) and checks that files can be made in it; the
    /// reason when not.
    static func prepare(_ directory: String) -> String? {
        var status = stat()
        if stat(directory, &status) != 0 {
            guard mkdir(directory, 0o750) == 0 else { return "cannot create \(directory): \(String(cString: strerror(errno)))" }
        } else if status.st_mode & S_IFMT != S_IFDIR {
            return "\(directory) is not a directory"
        }
        guard access(directory, W_OK | X_OK) == 0 else {
            return "cannot write in \(directory): \(String(cString: strerror(errno))); make it the server user's (systemd's StateDirectory= does)"
        }
        return nil
    }

    struct StoreError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
