import ArgumentParser
import CSystemShims
import FoundationEssentials
import Sallyport
import SallyportAuth
import SOCKSProtocol

#if canImport(Glibc)
import Glibc
#endif

struct Passwd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passwd",
        abstract: "Set a user's password (and groups) in the user file, or remove the user.",
        discussion: """
            Asks for the new password twice without echo on a terminal, or reads one line from \
            standard input otherwise. Other lines of the file, comments included, stay as they \
            are; the file is replaced atomically and keeps its mode and owner (a new one is 0640). \
            The running server reads the change at its next reload (systemctl reload sallyport).
            """)

    @Argument(help: "The user name.")
    var user: String

    @Option(name: .long, help: ArgumentHelp("The user file (default: auth.file of --config, else /etc/sallyport/users).", valueName: "path"))
    var file: String?

    @Option(name: .long, help: ArgumentHelp("The configuration file whose auth.file is used.", valueName: "path"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("The user's groups, comma-separated (default: keep the ones it has; \"\" for none).", valueName: "list"))
    var groups: String?

    @Option(name: .long, help: ArgumentHelp("The hash method: yescrypt (default), bcrypt or sha512.", valueName: "method"))
    var method: String = "yescrypt"

    @Flag(name: .long, help: "Remove the user instead.")
    var delete = false

    func run() throws {
        _ = sallyport_set_nondumpable()
        if let problem = UserFile.nameProblem(user) { fail(problem) }
        guard let hashMethod = PasswordHash.Method(rawValue: method) else { fail("--method: '\(method)' is not yescrypt, bcrypt or sha512") }
        var groupList: [String]?
        if let groups {
            groupList = groups.isEmpty ? [] : groups.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            for group in groupList ?? [] { if let problem = UserFile.groupProblem(group) { fail("--groups: \(problem)") } }
        }
        let path = try file ?? config.map { try loadConfiguration($0).auth.file ?? "/etc/sallyport/users" } ?? "/etc/sallyport/users"
        let existing = FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
        if existing == nil, FileManager.default.fileExists(atPath: path) { fail("cannot read \(path); check its permissions") }
        let text = existing ?? ""
        let updated: String
        if delete {
            guard let removed = UserFile.removing(user: user, from: text) else { fail("\(path) has no user '\(user)'") }
            updated = removed
        } else {
            guard let password = readPassword(prompt: "New password for \(user): ") else { fail("no password given") }
            // RFC 1929 carries 1 to 255 bytes: a longer one could never be typed into a login.
            let length = password.withUnsafeBytes { $0.count }
            guard (1...255).contains(length) else {
                fail("the password is \(length) bytes; a SOCKS5 login carries 1 to 255 (RFC 1929), so a longer one could never log in; nothing changed")
            }
            if isatty(0) == 1 {
                guard let again = readPassword(prompt: "Again: "), again == password else { fail("the passwords do not match; nothing changed") }
            }
            guard let hash = PasswordHash.make(password, method: hashMethod) else { fail("cannot hash the password with \(method)") }
            updated = UserFile.setting(user: user, hash: hash, groups: groupList, in: text)
        }
        if case .failure(let problems) = UserFile.parse(updated) {
            // Lines that were wrong before stay wrong: say so rather than write a file the server refuses.
            fail(problems.lines.map { "\(path):\($0.line): \($0.message)" }.joined(separator: "\n") + "\nfix these lines first; nothing changed")
        }
        do {
            try AtomicFile.write(Array(updated.utf8), to: path, mode: 0o640)
        } catch {
            fail("\(error)")
        }
        let verb = delete ? "removed" : (text.contains("\n\(user):") || text.hasPrefix("\(user):") ? "updated" : "added")
        print("\(verb) user \(user) in \(path); reload the server to use it (systemctl reload sallyport)")
    }

    private func fail(_ message: String) -> Never {
        printError("sallyport passwd: \(message)")
        Passwd.exit(withError: ExitCode.failure)
    }
}
