import Foundation
import NIOConcurrencyHelpers

/// What a finished program left behind.
struct ProcessResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
    var timedOut: Bool
}

/// Set by `make sanitize`: memory and time bounds are the plain build's, not a sanitizer's.
let underSanitizer = ProcessInfo.processInfo.environment["SALLYPORT_SANITIZER"] != nil

/// How much longer waits for an event (a process starting, a log line) may take: a sanitized
/// build runs several times slower. Bounds on behaviour that is about time are not scaled.
let sanitizerSlowdown: Double = underSanitizer ? 4 : 1

/// Finds a program on PATH.
func which(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// The `sallyport` executable built beside the test bundle.
func sallyportExecutable() -> String {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [bundle, bundle.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("sallyport").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return packageRoot() + "/.build/debug/sallyport"
}

/// Runs a program to its end (killed after `timeout` seconds), feeding it `input`. `wrappers`: see
/// `BackgroundProcess`.
func runProcess(
    _ executable: String, _ arguments: [String], input: Data? = nil, environment: [String: String]? = nil,
    timeout: Double = 30, wrappers: Bool = false
) async throws -> ProcessResult {
    let program = try BackgroundProcess(executable, arguments, environment: environment, input: input ?? Data(), wrappers: wrappers)
    let status = await program.waitForExit(timeout: timeout)
    return ProcessResult(status: status ?? -1, stdout: program.stdout, stderr: program.stderr, timedOut: status == nil)
}

/// A program started in the background, stopped by its PID; its output is collected as it comes.
final class BackgroundProcess: Sendable {
    let process: Process
    private let outputs: (out: Pipe, err: Pipe)
    private let errorOutput = NIOLockedValueBox(Data())
    private let standardOutput = NIOLockedValueBox(Data())
    /// Held by a pipe's reader while it reads and appends, so that the last read, in
    /// `waitForExit`, never runs beside one and splices the output out of order.
    private let reading = (out: NIOLock(), err: NIOLock())

    /// - Parameters:
    ///   - input: written to standard input, which is then closed; nil gives /dev/null.
    ///   - wrappers: keep pam_wrapper and nss_wrapper preloaded (`make test` runs the tests under
    ///     them), for a program that checks logins through PAM. Others start without: the
    ///     wrapper's set-up races between programs that start at once ("Failed to create
    ///     pam_wrapper config dir ... File exists"), and a program it fails does not start.
    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, input: Data? = nil, wrappers: Bool = false) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var inherited = ProcessInfo.processInfo.environment
        if !wrappers { inherited["LD_PRELOAD"] = "" }
        process.environment = inherited.merging(environment ?? [:]) { $1 }
        outputs = (Pipe(), Pipe())
        process.standardOutput = outputs.out
        process.standardError = outputs.err
        let stdin = input.map { _ in Pipe() }
        process.standardInput = stdin ?? FileHandle.nullDevice
        for (pipe, box, lock) in [(outputs.out, standardOutput, reading.out), (outputs.err, errorOutput, reading.err)] {
            pipe.fileHandleForReading.readabilityHandler = { handle in
                lock.withLock {
                    let data = handle.availableData
                    box.withLockedValue { $0.append(data) }
                }
            }
        }
        try process.run()
        if let stdin, let input {
            stdin.fileHandleForWriting.write(input)
            try stdin.fileHandleForWriting.close()
        }
        self.process = process
    }

    var stderr: String { String(decoding: errorOutput.withLockedValue { $0 }, as: UTF8.self) }
    var stdout: String { String(decoding: standardOutput.withLockedValue { $0 }, as: UTF8.self) }

    /// Waits until standard error holds `text` (on `count` lines or more), up to `timeout` seconds.
    func waitForStderr(containing text: String, count: Int = 1, timeout: Double = 10) async -> Bool {
        let holds = { self.stderr.split(separator: "\n").lazy.filter { $0.contains(text) }.count >= count }
        let deadline = Date().addingTimeInterval(timeout * sanitizerSlowdown)
        while Date() < deadline {
            if holds() { return true }
            if !process.isRunning { return holds() }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Signals the program while it runs; never a PID that it no longer holds.
    func signal(_ signal: Int32) {
        if process.isRunning { kill(process.processIdentifier, signal) }
    }

    /// Waits for the exit, up to `timeout` seconds, then collects the rest of the output; kills the
    /// program after that. Returns the status, or nil when it had to be killed.
    func waitForExit(timeout: Double = 10) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout * sanitizerSlowdown)
        while process.isRunning, Date() < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        let finished = !process.isRunning
        if !finished { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        for (pipe, box, lock) in [(outputs.out, standardOutput, reading.out), (outputs.err, errorOutput, reading.err)] {
            pipe.fileHandleForReading.readabilityHandler = nil
            lock.withLock {
                let rest = pipe.fileHandleForReading.readDataToEndOfFile()
                box.withLockedValue { $0.append(rest) }
            }
        }
        return finished ? process.terminationStatus : nil
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        // Foundation keeps a handler that is still set for the life of the process.
        outputs.out.fileHandleForReading.readabilityHandler = nil
        outputs.err.fileHandleForReading.readabilityHandler = nil
    }
}

/// A temporary file holding `contents`; removed when the test's scope ends is not guaranteed, so
/// names are unique.
func temporaryFile(_ contents: String, suffix: String = ".yaml") throws -> String {
    let path = NSTemporaryDirectory() + "sallyport-test-\(UUID().uuidString)\(suffix)"
    try contents.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// The real server binary, started by a test and told to listen on a free loopback port.
struct ServerProcess {
    let process: BackgroundProcess
    /// The first listener's port, read from the server's `msg=listening` line.
    let port: Int
    /// The configuration file (rewrite it and send SIGHUP to reload).
    let configPath: String
    var pid: Int32 { process.process.processIdentifier }

    /// Starts `sallyport --config PATH` (plus `arguments`) with `yaml` written to a temporary file;
    /// throws when it does not say it listens within 20 s.
    /// In network namespace `namespace` when given (`ip netns exec` becomes the server: same PID).
    static func start(
        _ yaml: String, arguments: [String] = [], environment: [String: String]? = nil, namespace: String? = nil
    ) async throws -> ServerProcess {
        // Usage totals go to a directory of the test's own, never /var/lib/sallyport.
        let stateDirectory = NSTemporaryDirectory() + "sallyport-state-\(UUID().uuidString)"
        let path = try temporaryFile(yaml.contains("state_dir:") ? yaml : yaml + "\nstate_dir: \(stateDirectory)\n")
        let command = [sallyportExecutable(), "--config", path] + arguments
        let ip = which("ip") ?? "/usr/sbin/ip"
        // Logins through PAM need the wrappers; a user file or method none does not.
        let pam = yaml.contains("username") && !yaml.contains("auth: {file") && !yaml.contains("\n  file:")
        let process = try namespace.map { try BackgroundProcess(ip, ["netns", "exec", $0] + command, environment: environment, wrappers: pam) }
            ?? BackgroundProcess(command[0], Array(command.dropFirst()), environment: environment, wrappers: pam)
        // logfmt (msg=listening) or JSON ("msg":"listening").
        let listening = arguments.contains("json") ? "\"msg\":\"listening\"" : "msg=listening"
        guard await process.waitForStderr(containing: listening, timeout: 20) else {
            process.signal(SIGKILL)
            throw TestSocketError("the server did not start: \(process.stderr)", errno: 0)
        }
        let line = process.stderr.split(separator: "\n").first { $0.contains(listening) }.map(String.init) ?? ""
        let addresses = (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["addresses"] as? String
            ?? logfmtFields(line)["addresses"]
        guard let port = Int(addresses?.split(separator: ",").first?.split(separator: ":").last ?? "") else {
            process.signal(SIGKILL)
            throw TestSocketError("no port in the listening line: \(line)", errno: 0)
        }
        return ServerProcess(process: process, port: port, configPath: path)
    }
}

/// How many descriptors a process holds open.
func openDescriptors(_ pid: Int32) -> Int? {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd"))?.count
}
