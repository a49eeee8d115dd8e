import ArgumentParser
import CSystemShims
import Sallyport
import SallyportAuth
import NIOCore
import SOCKSProtocol

#if canImport(Glibc)
import Glibc
#endif

struct CheckAuth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-auth",
        abstract: "Check a user's password through the configured PAM service or user file, exactly as the server does.",
        discussion: """
            Asks for the password without echo on a terminal, or reads one line from standard input \
            otherwise. Prints the outcome, the checker's message and the user's groups; exits 0 \
            when the login would be accepted, 1 when not. Uses the user file when --file is given \
            or the configuration sets auth.file (and --service is not given), else PAM. Run it as \
            the user the server runs as: pam_unix can check other users' passwords only for root \
            or members of group shadow.
            """)

    @Argument(help: "The user name to check.")
    var user: String

    @Option(name: .long, help: ArgumentHelp("The configuration file whose auth.pam.service is used.", valueName: "path"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("The PAM service to use instead of the configured one.", valueName: "name"))
    var service: String?

    @Option(name: .long, help: ArgumentHelp("The client IP address to give PAM as PAM_RHOST.", valueName: "ip"))
    var client: String?

    @Option(name: .long, help: ArgumentHelp("The user file to check against instead of PAM.", valueName: "path"))
    var file: String?

    func run() throws {
        // It is about to hold a password: no core dump of it.
        _ = sallyport_set_nondumpable()
        let configuration = try loadConfiguration(config)
        if let path = file ?? (service == nil ? configuration.auth.file : nil) {
            return try checkFile(path, failDelay: configuration.auth.failDelay)
        }
        let serviceName = service ?? configuration.auth.pam.service
        guard let password = readPassword(prompt: "Password for \(user): ") else {
            printError("sallyport: no password given")
            throw ExitCode.failure
        }
        let outcome = runPAMTransaction(service: serviceName, username: user, password: password, remoteHost: client)
        print("user: \(user)")
        print("service: \(serviceName)")
        print("result: \(outcome.success ? "accepted" : "refused")")
        print("pam: \(outcome.step): \(outcome.message)")
        for message in outcome.moduleMessages { print("message: \(message)") }
        if outcome.success {
            let groups = groupNames(ofUser: user)
            print("groups: \(groups.isEmpty ? "-" : groups.joined(separator: ", "))")
        } else {
            throw ExitCode.failure
        }
    }
}

extension CheckAuth {
    /// The check against a user file, as the server makes it (failures answered after the same delay).
    func checkFile(_ path: String, failDelay: TimeAmount) throws {
        let users: UserFile
        switch AuthenticationSettings.readUserFile(path) {
        case .success(let (read, warning)):
            users = read
            if let warning { printError("warning: \(warning)") }
        case .failure(let error):
            printError("sallyport: \(error)")
            throw ExitCode.failure
        }
        guard let password = readPassword(prompt: "Password for \(user): ") else {
            printError("sallyport: no password given")
            throw ExitCode.failure
        }
        let started = NIODeadline.now()
        let identity = FileAuthenticator.check(user, password, in: users)
        print("user: \(user)")
        print("file: \(path)")
        print("result: \(identity != nil ? "accepted" : "refused")")
        guard let identity else {
            let reason = users.accounts[user] == nil ? "no such user" : PasswordHash.isLocked(users.accounts[user]!.hash) ? "the account is locked" : "wrong password"
            print("file: \(reason)")
            let left = failDelay - (NIODeadline.now() - started)
            if left > .zero { usleep(UInt32(clamping: left.nanoseconds / 1000)) }
            throw ExitCode.failure
        }
        print("groups: \(identity.groups.isEmpty ? "-" : identity.groups.joined(separator: ", "))")
    }
}

/// Reads a password: without echo from a terminal, else one line of standard input.
func readPassword(prompt: String) -> Password? {
    let terminal = isatty(0) == 1
    var saved = termios()
    if terminal {
        LineLogHandler.standardError(prompt)
        tcgetattr(0, &saved)
        var silent = saved
        silent.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(0, TCSAFLUSH, &silent)
    }
    defer {
        if terminal {
            tcsetattr(0, TCSAFLUSH, &saved)
            LineLogHandler.standardError("\n")
        }
    }
    // Room for the longest accepted line from the start, so no reallocation leaves a copy behind;
    // wiped once the Password holds the bytes.
    var bytes: [UInt8] = []
    bytes.reserveCapacity(4097)
    defer { bytes.withUnsafeMutableBytes { if let base = $0.baseAddress { explicit_bzero(base, $0.count) } } }
    var byte: UInt8 = 0
    while read(0, &byte, 1) == 1 {
        if byte == UInt8(ascii: "\n") { break }
        bytes.append(byte)
        if bytes.count > 4096 { return nil }
    }
    byte = 0
    if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
    return bytes.isEmpty ? nil : Password(bytes: bytes)
}
