import SallyportTestSupport
import CTestSupport
import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// What a finished program left behind.
struct ProcessResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
    var timedOut: Bool
}

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

/// Runs a program to its end on the calling thread and returns its standard output (standard
/// error is dropped): for clean-ups in `defer` and set-up, never on the cooperative pool. Starts it
/// without the PAM wrappers.
@discardableResult
func runBlocking(_ path: String, _ arguments: [String], environment: [String: String] = [:]) -> String {
    guard let out = try? Pipe.make() else { return "" }
    let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
    defer { close(devNull) }
    let merged = ProcessInfo.processInfo.environment.merging(["LD_PRELOAD": ""]) { $1 }.merging(environment) { $1 }
    let pid = try? Spawner.shared.spawn(
        path, [path] + arguments, environment: merged.map { "\($0.key)=\($0.value)" },
        stdin: devNull, stdout: out.write, stderr: devNull)
    close(out.write)
    defer { close(out.read) }
    guard let pid else { return "" }
    var output = Data()
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let got = buffer.withUnsafeMutableBytes { read(out.read, $0.baseAddress!, $0.count) }
        if got < 0, errno == EINTR { continue }
        if got <= 0 { break }
        output.append(contentsOf: buffer[0..<got])
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
    return String(decoding: output, as: UTF8.self)
}

/// A program started in the background and stopped by its PID, never by name. It runs in a
/// process group of its own (stopping it stops what it forked) and dies with the test process:
/// its parent-death signal is SIGKILL, armed from the one thread that starts every program
/// (`Spawner`), which lives as long as the test process. Its output is read by a thread of its
/// own as it comes; waits on it are woken by that output, not by polling.
final class BackgroundProcess: Sendable {
    let processIdentifier: Int32

    private struct State {
        var stdout = Data()
        var stderr = Data()
        /// Set once the program has exited but before it is reaped: from then on its PID may not
        /// be signalled (once reaped, it could be another program's).
        var exited = false
        var status: Int32?
        var outputOpen = 2
    }
    private let state = NIOLockedValueBox(State())
    private let changes = Changes()

    /// - Parameters:
    ///   - input: written to standard input, which is then closed; nil gives /dev/null.
    ///   - wrappers: keep pam_wrapper and nss_wrapper preloaded (`make test` runs the tests under
    ///     them), for a program that checks logins through PAM. Others start without: the
    ///     wrapper's set-up races between programs that start at once ("Failed to create
    ///     pam_wrapper config dir ... File exists"), and a program it fails does not start.
    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, input: Data? = nil, wrappers: Bool = false) throws {
        TestRun.current.prepare()
        var inherited = ProcessInfo.processInfo.environment
        if !wrappers { inherited["LD_PRELOAD"] = "" }
        let merged = inherited.merging(environment ?? [:]) { $1 }
        let out = try Pipe.make(), err = try Pipe.make()
        let stdin = try input.map { _ in try Pipe.make() }
        let devNull = stdin == nil ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1
        defer {
            close(out.write)
            close(err.write)
            if let stdin { close(stdin.read) }
            if devNull >= 0 { close(devNull) }
        }
        let pid = try Spawner.shared.spawn(
            executable, [executable] + arguments, environment: merged.map { "\($0.key)=\($0.value)" },
            stdin: stdin?.read ?? devNull, stdout: out.write, stderr: err.write)
        processIdentifier = pid
        let state = self.state, changes = self.changes
        Thread.detachNewThread {
            BackgroundProcess.readOutput(out: out.read, err: err.read, into: state, changes: changes)
        }
        Thread.detachNewThread {
            BackgroundProcess.reap(pid, into: state, changes: changes)
        }
        if let stdin, let input {
            let fd = stdin.write
            Thread.detachNewThread {
                input.withUnsafeBytes { bytes in
                    var offset = 0
                    while offset < bytes.count {
                        let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                        if written < 0, errno == EINTR { continue }
                        if written <= 0 { break }
                        offset += written
                    }
                }
                close(fd)
            }
        }
        let group = pid
        ServerScope.register { [state] in
            state.withLockedValue { if !$0.exited { kill(-group, SIGKILL) } }
        }
    }

    var stderr: String { String(decoding: state.withLockedValue { $0.stderr }, as: UTF8.self) }
    var stdout: String { String(decoding: state.withLockedValue { $0.stdout }, as: UTF8.self) }
    var isRunning: Bool { state.withLockedValue { !$0.exited } }

    /// Waits until standard error holds `text` (on `count` lines or more), up to `timeout` seconds.
    func waitForStderr(containing text: String, count: Int = 1, timeout: Double = 10) async -> Bool {
        let needle = Data(text.utf8)
        let holds = { @Sendable [state] () -> Bool in
            state.withLockedValue { state in
                var found = 0
                for line in state.stderr.split(separator: UInt8(ascii: "\n")) where line.range(of: needle) != nil {
                    found += 1
                    if found >= count { return true }
                }
                return false
            }
        }
        let finished = { @Sendable [state] in state.withLockedValue { $0.status != nil && $0.outputOpen == 0 } }
        _ = await changes.wait(timeout: timeout * sanitizerSlowdown) { holds() || finished() }
        return holds()
    }

    /// Signals the program while it runs; never a PID that it no longer holds.
    func signal(_ signal: Int32) {
        state.withLockedValue { if !$0.exited { kill(processIdentifier, signal) } }
    }

    /// Waits for the exit, up to `timeout` seconds; kills the program's process group after that.
    /// Then waits (briefly) for the rest of the output. Returns the status (the exit code, or the
    /// signal that ended it), or nil when it had to be killed.
    func waitForExit(timeout: Double = 10) async -> Int32? {
        let exited = await changes.wait(timeout: timeout * sanitizerSlowdown) { [state] in state.withLockedValue { $0.status != nil } }
        if !exited {
            state.withLockedValue { if !$0.exited { kill(-processIdentifier, SIGKILL) } }
            _ = await changes.wait(timeout: 30) { [state] in state.withLockedValue { $0.status != nil } }
        }
        // What it forked may hold the pipes open; its output so far is what there is.
        _ = await changes.wait(timeout: 2) { [state] in state.withLockedValue { $0.outputOpen == 0 } }
        return exited ? state.withLockedValue { $0.status } : nil
    }

    deinit {
        let group = processIdentifier
        state.withLockedValue { if !$0.exited { kill(-group, SIGKILL) } }
    }

    private static func readOutput(out: Int32, err: Int32, into state: NIOLockedValueBox<State>, changes: Changes) {
        var fds = [pollfd(fd: out, events: Int16(POLLIN), revents: 0), pollfd(fd: err, events: Int16(POLLIN), revents: 0)]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while fds.contains(where: { $0.fd >= 0 }) {
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                break
            }
            for index in fds.indices where fds[index].fd >= 0 && fds[index].revents != 0 {
                let got = buffer.withUnsafeMutableBytes { read(fds[index].fd, $0.baseAddress!, $0.count) }
                if got < 0, errno == EINTR { continue }
                if got <= 0 {
                    close(fds[index].fd)
                    fds[index].fd = -1
                    state.withLockedValue { $0.outputOpen -= 1 }
                } else {
                    let data = Data(buffer[0..<got])
                    state.withLockedValue { index == 0 ? $0.stdout.append(data) : $0.stderr.append(data) }
                }
                changes.notify()
            }
        }
    }

    private static func reap(_ pid: Int32, into state: NIOLockedValueBox<State>, changes: Changes) {
        // Wait without reaping, mark it exited, then reap: a signal sent under the lock meanwhile
        // reaches the zombie, never a later process that was given the same PID.
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0, errno == EINTR {}
        state.withLockedValue { $0.exited = true }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
        state.withLockedValue { $0.status = code }
        changes.notify()
    }
}

/// A pipe's two close-on-exec descriptors.
struct Pipe {
    let read: Int32
    let write: Int32

    static func make() throws -> Pipe {
        var fds: [Int32] = [-1, -1]
        guard sallyport_test_pipe(&fds) == 0 else { throw TestSocketError("pipe2") }
        return Pipe(read: fds[0], write: fds[1])
    }
}

/// The one thread that starts every program: a child's parent-death signal fires when the thread
/// that forked it ends, so that thread must live as long as the test process.
final class Spawner: @unchecked Sendable {
    // @unchecked: `pending` is only touched with `condition` held.
    static let shared = Spawner()

    private let condition = NSCondition()
    private var pending: [@Sendable () -> Void] = []

    private init() {
        let thread = Thread { [self] in loop() }
        thread.name = "test-spawner"
        thread.start()
    }

    /// Starts `path`; returns its PID. Blocks the caller only for the fork and exec.
    func spawn(_ path: String, _ arguments: [String], environment: [String], stdin: Int32, stdout: Int32, stderr: Int32) throws -> Int32 {
        let result = NIOLockedValueBox<Result<Int32, TestSocketError>?>(nil)
        let done = NSCondition()
        let parent = getpid()
        let job: @Sendable () -> Void = {
            let pid = withCStrings(arguments) { argv in
                withCStrings(environment) { envp in
                    sallyport_test_spawn(path, argv, envp, stdin, stdout, stderr, parent)
                }
            }
            let outcome: Result<Int32, TestSocketError> = pid > 0 ? .success(pid) : .failure(TestSocketError("cannot start \(path)"))
            done.lock()
            result.withLockedValue { $0 = outcome }
            done.signal()
            done.unlock()
        }
        condition.lock()
        pending.append(job)
        condition.signal()
        condition.unlock()
        done.lock()
        while result.withLockedValue({ $0 }) == nil { done.wait() }
        done.unlock()
        return try result.withLockedValue { $0! }.get()
    }

    private func loop() {
        while true {
            condition.lock()
            while pending.isEmpty { condition.wait() }
            let job = pending.removeFirst()
            condition.unlock()
            job()
        }
    }
}

/// Calls `body` with a NULL-terminated C array of `strings`.
private func withCStrings<T>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> T) -> T {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// The real server binary, started by a test and told to listen on a free loopback port.
struct ServerProcess {
    let process: BackgroundProcess
    /// The first listener's port, read from the server's `msg=listening` line.
    let port: Int
    /// The configuration file (rewrite it and send SIGHUP to reload).
    let configPath: String
    var pid: Int32 { process.processIdentifier }

    /// Starts `sallyport --config PATH` (plus `arguments`) with `yaml` written to a temporary file;
    /// throws when it does not say it listens within 20 s.
    /// In network namespace `namespace` when given (`ip netns exec` becomes the server: same PID).
    /// `executable`: another build of the server than the one beside the tests.
    static func start(
        _ yaml: String, arguments: [String] = [], environment: [String: String]? = nil, namespace: String? = nil, executable: String? = nil
    ) async throws -> ServerProcess {
        // Usage totals go to a directory of the test's own, never /var/lib/sallyport.
        let stateDirectory = TestRun.current.temporaryPath("state")
        let path = try temporaryFile(yaml.contains("state_dir:") ? yaml : yaml + "\nstate_dir: \(stateDirectory)\n")
        let command = [executable ?? sallyportExecutable(), "--config", path] + arguments
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

/// The server binary on 127.0.0.1:0 (and whatever listeners `yaml` adds) under a descriptor limit
/// of `limit`, soft and hard, so that it cannot raise its own; the process and its first port.
func serverWithDescriptorLimit(_ limit: Int, _ yaml: String, listen: Bool = true) async throws -> (BackgroundProcess, Int) {
    let config = try temporaryFile(yaml)
    let command = "ulimit -n \(limit) && exec \"$0\" --config \"$1\"" + (listen ? " --listen 127.0.0.1:0" : "")
    let server = try BackgroundProcess("/bin/sh", ["-c", command, sallyportExecutable(), config])
    guard await server.waitForStderr(containing: "msg=listening") else {
        server.signal(SIGKILL)
        throw TestSocketError("the server did not start: \(server.stderr)", errno: 0)
    }
    let listening = server.stderr.split(separator: "\n").first { $0.contains("msg=listening") }.map(String.init) ?? ""
    return (server, Int(logfmtFields(listening)["addresses"]?.split(separator: ",").first?.split(separator: ":").last ?? "") ?? 0)
}
