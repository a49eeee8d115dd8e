import SallyportTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A stand-in for systemd's notification socket: an `AF_UNIX` datagram socket at a path of its own
/// (or an abstract name), read with a timeout.
final class FakeNotifySocket: @unchecked Sendable {
    // @unchecked: a descriptor, read from one thread at a time.
    let fd: Int32
    /// What goes in `$NOTIFY_SOCKET`.
    let name: String

    init(abstract: Bool = false) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw TestSocketError("socket") }
        let tag = UUID().uuidString.prefix(8)
        name = abstract ? "@sallyport-test-\(tag)" : NSTemporaryDirectory() + "sallyport-notify-\(tag)"
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            for (index, byte) in bytes.enumerated() { path[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else { throw TestSocketError("bind \(name)") }
        var tv = timeval(tv_sec: 10 * Int(sanitizerSlowdown), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        close(fd)
        if !name.hasPrefix("@") { unlink(name) }
    }

    /// The next message's `KEY=value` lines, or nil after the timeout.
    func receive() -> [String: String]? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard got > 0 else { return nil }
        var fields: [String: String] = [:]
        for line in String(decoding: buffer[0..<got], as: UTF8.self).split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            fields[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return fields
    }
}

/// Running as a service: systemd's notification protocol (`Type=notify`) to a fake
/// `$NOTIFY_SOCKET`, priorities for journald, an access-log file that logrotate can move.
@Suite(.system, .timeLimit(.minutes(3))) struct SystemdTests {
    @Test(arguments: [false, true])
    func readyAfterTheBindReloadingThenReadyOnSIGHUPAndStoppingOnSIGTERM(abstract: Bool) async throws {
        let notify = try FakeNotifySocket(abstract: abstract)
        let path = try temporaryFile("listen: [127.0.0.1:0]\n" + loopbackRules)
        let server = try BackgroundProcess(sallyportExecutable(), ["--config", path], environment: ["NOTIFY_SOCKET": notify.name])
        defer { server.signal(SIGKILL) }

        let ready = try #require(try await onThread { notify.receive() }, "no READY=1: \(server.stderr)")
        #expect(ready["READY"] == "1")
        // Sent once the listener is bound: the status names the address it is bound to.
        #expect(await server.waitForStderr(containing: "msg=listening"))
        let listening = server.stderr.split(separator: "\n").first { $0.contains("msg=listening") }.map(String.init) ?? ""
        let address = try #require(logfmtFields(listening)["addresses"])
        #expect(ready["STATUS"] == "listening on \(address)")
        // And it answers there.
        let greeted = try await onThread { () throws -> [UInt8] in
            let socket = try TestSocket(host: "127.0.0.1", port: Int(address.split(separator: ":").last ?? "") ?? 0)
            try socket.send([5, 1, 0])
            return try socket.receive(exactly: 2)
        }
        #expect(greeted == [5, 0])

        // A good reload: RELOADING=1 with the monotonic clock, then READY=1.
        server.signal(SIGHUP)
        let reloading = try #require(try await onThread { notify.receive() })
        #expect(reloading["RELOADING"] == "1")
        #expect(UInt64(reloading["MONOTONIC_USEC"] ?? "") ?? 0 > 0)
        let reloaded = try #require(try await onThread { notify.receive() })
        #expect(reloaded["READY"] == "1")
        #expect(reloaded["STATUS"] == "configuration reloaded from \(path)")

        // A broken file: the old configuration stays, and the status says why.
        try "rules:\n  - action: maybe\n".write(toFile: path, atomically: true, encoding: .utf8)
        server.signal(SIGHUP)
        #expect(try await onThread { notify.receive() }?["RELOADING"] == "1")
        let failed = try #require(try await onThread { notify.receive() })
        #expect(failed["READY"] == "1")
        #expect(failed["STATUS"]?.hasPrefix("reload failed, running configuration kept: ") == true, "\(failed)")
        #expect(failed["STATUS"]?.contains("rules[0].action: 'maybe' is not allow or deny") == true, "\(failed)")

        server.signal(SIGTERM)
        let stopping = try #require(try await onThread { notify.receive() })
        #expect(stopping["STOPPING"] == "1")
        #expect(await server.waitForExit() == 0)
    }

    @Test func underJournaldEachLineCarriesItsSyslogPriority() async throws {
        // JOURNAL_STREAM names standard error's device and inode, as systemd sets it.
        // A block that holds special ranges it does not open: the server warns at start.
        let config = try temporaryFile("listen: [127.0.0.1:0]\nrules:\n  - {name: wide, action: allow, to: [0.0.0.0/0]}\n")
        // Without the test process's pam_wrapper, whose own start-up messages are not log lines.
        let server = try BackgroundProcess(
            "/bin/sh", ["-c", "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" --config \"$1\"", sallyportExecutable(), config],
            environment: ["LD_PRELOAD": ""])
        defer { server.signal(SIGKILL) }
        #expect(await server.waitForStderr(containing: "msg=listening"))
        server.signal(SIGTERM)
        #expect(await server.waitForExit() == 0)
        let lines = server.stderr.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("<6>ts=") && $0.contains("msg=listening") }, "\(lines)")
        #expect(lines.allSatisfy { $0.hasPrefix("<") }, "\(lines)")
        // The warning is priority 4.
        #expect(lines.contains { $0.hasPrefix("<4>") && $0.contains("level=warning") }, "\(lines)")

        // JOURNAL_STREAM that names another stream (inherited, stderr redirected): plain lines.
        let plain = try BackgroundProcess(sallyportExecutable(), ["--config", config], environment: ["JOURNAL_STREAM": "1:2", "LD_PRELOAD": ""])
        defer { plain.signal(SIGKILL) }
        #expect(await plain.waitForStderr(containing: "msg=listening"))
        plain.signal(SIGTERM)
        _ = await plain.waitForExit()
        #expect(plain.stderr.hasPrefix("ts="), "\(plain.stderr)")
    }

    @Test func theAccessLogFileIsReopenedOnSIGUSR1AfterLogrotateMovedIt() async throws {
        let echo = try await TargetServer.echo()
        let directory = NSTemporaryDirectory() + "sallyport-logs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/access.log"
        let server = try await ServerProcess.start("listen: [127.0.0.1:0]\nlog:\n  access_file: \(file)\n" + loopbackRules)
        defer { server.process.signal(SIGKILL) }
        func session(_ byte: UInt8) async throws {
            let echoed = try await onThread { () throws -> [UInt8] in
                let socket = try TestSocket(host: "127.0.0.1", port: server.port)
                guard try socket.socksConnect(to: loopback4(echo.port), payload: [byte]).code == .succeeded else { return [] }
                socket.shutdownWrite()
                return try socket.receiveUntilEOF()
            }
            #expect(echoed == [byte])
        }
        @Sendable func sessionLines(_ path: String) -> [String] {
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init).filter { $0.contains("msg=session") }
        }
        try await session(1)
        #expect(await waitUntil(timeout: 5) { sessionLines(file).count == 1 })
        // Access-log lines go to the file only; the others stay on standard error.
        #expect(!server.process.stderr.contains("msg=session"))
        #expect(server.process.stderr.contains("msg=listening"))

        // logrotate moves the file, then signals.
        try FileManager.default.moveItem(atPath: file, toPath: file + ".1")
        server.process.signal(SIGUSR1)
        #expect(await server.process.waitForStderr(containing: "access log reopened"))
        try await session(2)
        #expect(await waitUntil(timeout: 5) { sessionLines(file).count == 1 })
        #expect(sessionLines(file + ".1").count == 1)
        #expect(logfmtFields(sessionLines(file).first ?? "")["up"] == "1")
        #expect(server.process.isRunning)
        await echo.stop()
    }

    @Test func anAccessLogFileThatCannotBeOpenedStopsTheStartWithItsReason() async throws {
        let result = try await runProcess(
            sallyportExecutable(), ["--config", try temporaryFile("listen: [127.0.0.1:0]\nlog:\n  access_file: /nonexistent-dir/access.log\n")])
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot open the access log /nonexistent-dir/access.log: No such file or directory"), "\(result.stderr)")
    }
}
