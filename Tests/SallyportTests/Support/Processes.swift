import Foundation
import NIOConcurrencyHelpers

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

/// Runs a program to its end (killed after `timeout` seconds), feeding it `input`.
func runProcess(
    _ executable: String, _ arguments: [String], input: Data? = nil, environment: [String: String]? = nil,
    timeout: Double = 30
) async throws -> ProcessResult {
    try await onThread {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let stdout = Pipe()
        let stderr = Pipe()
        let stdin = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = stdin
        let out = NIOLockedValueBox(Data())
        let err = NIOLockedValueBox(Data())
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            out.withLockedValue { $0.append(data) }
        }
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            err.withLockedValue { $0.append(data) }
        }
        try process.run()
        if let input { stdin.fileHandleForWriting.write(input) }
        try stdin.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                timedOut = true
                kill(process.processIdentifier, SIGKILL)
                break
            }
            usleep(10_000)
        }
        process.waitUntilExit()
        stdout.fileHandleForReading.readabilityHandler = nil
        stderr.fileHandleForReading.readabilityHandler = nil
        let restOut = stdout.fileHandleForReading.readDataToEndOfFile()
        let restErr = stderr.fileHandleForReading.readDataToEndOfFile()
        out.withLockedValue { $0.append(restOut) }
        err.withLockedValue { $0.append(restErr) }
        return ProcessResult(
            status: process.terminationStatus,
            stdout: String(decoding: out.withLockedValue { $0 }, as: UTF8.self),
            stderr: String(decoding: err.withLockedValue { $0 }, as: UTF8.self),
            timedOut: timedOut)
    }
}

/// A program started in the background, stopped by its PID.
final class BackgroundProcess: Sendable {
    let process: Process
    private let errorOutput = NIOLockedValueBox(Data())
    private let standardOutput = NIOLockedValueBox(Data())

    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        let err = errorOutput
        let out = standardOutput
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            err.withLockedValue { $0.append(data) }
        }
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            out.withLockedValue { $0.append(data) }
        }
        try process.run()
        self.process = process
    }

    var stderr: String { String(decoding: errorOutput.withLockedValue { $0 }, as: UTF8.self) }

    /// Waits until standard error holds `text`, up to `timeout` seconds.
    func waitForStderr(containing text: String, timeout: Double = 10) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if stderr.contains(text) { return true }
            if !process.isRunning { return stderr.contains(text) }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits for the exit, up to `timeout` seconds; kills it after that. Returns the status.
    func waitForExit(timeout: Double = 10) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        guard !process.isRunning else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// A temporary file holding `contents`; removed when the test's scope ends is not guaranteed, so
/// names are unique.
func temporaryFile(_ contents: String, suffix: String = ".yaml") throws -> String {
    let path = NSTemporaryDirectory() + "sallyport-test-\(UUID().uuidString)\(suffix)"
    try contents.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}
