import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Testing

@testable import Sallyport

/// Usage totals and quotas in the real binary: a SIGKILL mid-transfer, a quota crossed while a
/// session runs, a corrupt state file.
@Suite(.system, .timeLimit(.minutes(3))) struct UsageServerTests {
    /// A home for the user file and the state directory; alice (group staff) and bob.
    func home() async throws -> String {
        let path = NSTemporaryDirectory() + "sallyport-usage-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path + "/state", withIntermediateDirectories: true)
        for (user, groups) in [("alice", "staff"), ("bob", "")] {
            let made = try await runProcess(
                sallyportExecutable(), ["passwd", user, "--file", path + "/users", "--groups", groups], input: Data("\(user)-pw\n".utf8),
                environment: ["LD_PRELOAD": ""])
            #expect(made.status == 0, "\(made.stderr)")
        }
        return path
    }

    func config(_ home: String, _ extra: String = "") -> String {
        """
        listen: [127.0.0.1:0]
        methods: [username]
        auth: {file: \(home)/users}
        admin: {listen: 127.0.0.1:0}
        state_dir: \(home)/state
        \(extra)
        """ + loopbackRules
    }

    /// A logged-in CONNECT to `port`.
    func session(_ proxy: Int, _ user: String, to port: Int) throws -> TestSocket {
        let socket = try TestSocket(host: "127.0.0.1", port: proxy, timeout: 20)
        try socket.send([5, 1, 2])
        try expectBytesHelper(try socket.receive(exactly: 2), [5, 2])
        let password = Array("\(user)-pw".utf8)
        try socket.send([1, UInt8(user.utf8.count)] + Array(user.utf8) + [UInt8(password.count)] + password)
        try expectBytesHelper(try socket.receive(exactly: 2), [1, 0])
        var request = ByteBuffer()
        request.writeSOCKSRequest(SOCKSRequest(command: .connect, destination: loopback4(port)))
        try socket.send(Array(request.readableBytesView))
        guard try socket.readReply().code == .succeeded else { throw TestSocketError("the CONNECT was refused", errno: 0) }
        return socket
    }

    /// What a paced echo stream moved: bytes sent and echoed back, when it started and when the
    /// proxy closed it (nil: it ran its course).
    struct Stream: Sendable {
        var sent = 0
        var received = 0
        var started = Date()
        var closed: Date?
        /// When sent + received first reached `mark`.
        var reachedMark: Date?
    }

    /// Sends 32 KiB every 20 ms (about 1.6 MB/s) and reads each echo, for up to `seconds`.
    static func stream(_ socket: TestSocket, seconds: Double, mark: Int = .max) -> Stream {
        var stream = Stream()
        let chunk = [UInt8](repeating: 0x5A, count: 32 << 10)
        for _ in 0..<Int(seconds / 0.02) {
            do {
                try socket.send(chunk)
                stream.sent += chunk.count
                stream.received += try socket.receive(exactly: chunk.count).count
            } catch {
                stream.closed = Date()
                return stream
            }
            if stream.reachedMark == nil, stream.sent + stream.received >= mark { stream.reachedMark = Date() }
            usleep(20_000)
        }
        return stream
    }

    func usage(_ admin: Int) throws -> [String: Any] {
        let (status, body) = try httpRequest(port: admin, "/usage")
        guard status == 200, let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else {
            throw TestSocketError("GET /usage: \(status) \(body)", errno: 0)
        }
        return object
    }

    func user(_ report: [String: Any], _ name: String) -> [String: Any]? {
        (report["users"] as? [[String: Any]])?.first { $0["user"] as? String == name }
    }

    func total(_ report: [String: Any], _ name: String) -> (up: Int, down: Int) {
        let total = user(report, name)?["total"] as? [String: Any]
        return (total?["up"] as? Int ?? 0, total?["down"] as? Int ?? 0)
    }

    @Test(.timing) func aSIGKILLMidTransferLosesAtMostOneSaveIntervalOfCounting() async throws {
        let home = try await home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let echo = try await TargetServer.echo()
        let yaml = config(home, "usage: {save_interval: 2s}")
        let first = try await ServerProcess.start(yaml)
        defer { first.process.signal(SIGKILL) }
        let (proxy, port) = (first.port, echo.port)
        let transfer = Task { try await onThread { Self.stream(try session(proxy, "alice", to: port), seconds: 30) } }
        // Killed once a save has counted the running session, and a second after.
        let stateFile = home + "/state/usage.json"
        let saved = await waitUntil(timeout: 15) {
            (try? UsageStore.read(stateFile).get())??.users["alice"].map { $0.total.up > 0 && $0.total.down > 0 } ?? false
        }
        #expect(saved, "no save counted the running session")
        try await Task.sleep(for: .seconds(1))
        first.process.signal(SIGKILL)
        _ = await first.process.waitForExit()
        let stream = try await transfer.value
        #expect(stream.closed != nil)
        let seconds = (stream.closed ?? Date()).timeIntervalSince(stream.started)
        let rate = Double(stream.sent) / seconds
        // Restarted on the same state directory: the totals of the last save.
        let second = try await ServerProcess.start(yaml)
        defer { second.process.signal(SIGKILL) }
        let report = try usage(try await adminPort(of: second))
        let (up, down) = total(report, "alice")
        // The server read at most what was sent, and sent back at most that; it lost no more than
        // one save interval (2 s) of counting, with a second of slack for the last report.
        let lost = Double(stream.sent - up)
        #expect(up <= stream.sent && down <= stream.sent && up > 0 && down > 0, "up \(up) down \(down), sent \(stream.sent)")
        #expect(lost <= 3 * rate, "lost \(lost) bytes of \(stream.sent) at \(rate) B/s")
        #expect(Double(stream.received - down) <= 3 * rate, "down \(down) of \(stream.received) received at \(rate) B/s")
        #expect(second.process.stderr.contains("usage totals loaded from \(stateFile)"))
        await echo.stop()
    }

    @Test(.timing) func aQuotaEndsARunningSessionWithinTenSecondsAndRefusesTheNextWith02() async throws {
        let home = try await home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let echo = try await TargetServer.echo()
        let quota = 3 << 20
        let server = try await ServerProcess.start(config(home, "quotas: [{who: [group:staff], bytes: \(quota), period: day}]"))
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(of: server)
        let (proxy, port) = (server.port, echo.port)
        // bob has no quota: his session runs beside alice's and is not touched.
        let bobs = Task { try await onThread { Self.stream(try session(proxy, "bob", to: port), seconds: 4) } }
        let alices = try await onThread { Self.stream(try session(proxy, "alice", to: port), seconds: 30, mark: quota) }
        let crossed = try #require(alices.reachedMark, "alice never reached her quota: \(alices)")
        let closed = try #require(alices.closed, "alice's session was not closed")
        #expect(closed.timeIntervalSince(crossed) <= 10, "closed \(closed.timeIntervalSince(crossed)) s after crossing")
        #expect(await server.process.waitForStderr(containing: "user=alice cmd=connect"))
        let line = server.process.stderr.split(separator: "\n").first { $0.contains("msg=session") && $0.contains("user=alice") }.map(String.init) ?? ""
        #expect(logfmtFields(line)["end"] == "quota", "\(line)")
        // The next session is refused with 0x02, and logged so.
        let next = try await onThread { () throws -> SOCKSReplyCode? in
            let outcome = try socksLogin(proxyPort: proxy, user: Array("alice".utf8), password: Array("alice-pw".utf8), destination: loopback4(port))
            return outcome.reply
        }
        #expect(next == .notAllowed)
        #expect(await server.process.waitForStderr(containing: "end=quota", count: 2))
        let bob = try await bobs.value
        #expect(bob.closed == nil && bob.sent == bob.received, "\(bob)")
        // /usage says so.
        let report = try usage(admin)
        let quotas = user(report, "alice")?["quotas"] as? [[String: Any]]
        #expect(quotas?.first?["exceeded"] as? Bool == true && quotas?.first?["bytes"] as? Int == quota)
        #expect((user(report, "bob")?["quotas"] as? [Any])?.isEmpty == true)
        // The admin lifts it for today: alice's day starts again, her total stays.
        #expect(try httpRequest(port: admin, "/usage/alice", method: "DELETE").status == 200)
        #expect(try httpRequest(port: admin, "/usage/nobody", method: "DELETE").status == 404)
        let lifted = try await onThread {
            try socksLogin(proxyPort: proxy, user: Array("alice".utf8), password: Array("alice-pw".utf8), destination: loopback4(port)).reply
        }
        #expect(lifted == .succeeded)
        #expect(total(try usage(admin), "alice").up >= quota / 2)
        await echo.stop()
    }

    /// The attack: a 40 MB download at full speed by a user with a 2 MiB quota. The relay holds
    /// a 64 KiB lease at a time, so at most 2.5 MiB arrive before the session ends.
    @Test func aFullSpeedDownloadStopsWithinHalfAMebibyteOfTheQuota() async throws {
        let home = try await home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let source = try BackgroundProcess("/usr/bin/python3", ["-c", """
            import socket, sys
            server = socket.create_server(("127.0.0.1", 0))
            print("port %d" % server.getsockname()[1], file=sys.stderr, flush=True)
            while True:
                conn, _ = server.accept()
                try:
                    conn.sendall(b"x" * 40_000_000)
                except OSError:
                    pass
                conn.close()
            """], environment: withoutWrappers)
        defer { source.signal(SIGKILL) }
        #expect(await source.waitForStderr(containing: "port "))
        let port = try #require(Int(source.stderr.split(separator: "\n")[0].split(separator: " ").last ?? ""))
        let quota = 2 << 20
        let server = try await ServerProcess.start(config(home, "quotas: [{who: [group:staff], bytes: \(quota), period: day}]"))
        defer { server.process.signal(SIGKILL) }
        let proxy = server.port
        let received = try await onThread { () throws -> Int in
            let socket = try session(proxy, "alice", to: port)
            return try socket.receiveUntilEOF().count
        }
        #expect(received <= quota + quota / 4, "\(received) bytes arrived against a quota of \(quota)")
        #expect(received >= quota - SessionUsage.lease, "the quota itself is served: \(received)")
        #expect(await server.process.waitForStderr(containing: "msg=session"))
        let line = server.process.stderr.split(separator: "\n").first { $0.contains("msg=session") }.map(String.init) ?? ""
        #expect(logfmtFields(line)["end"] == "quota", "\(line)")
    }

    @Test func theSaveAtSIGTERMKeepsEveryByteAndAMonthlyQuotaHoldsAfterARestart() async throws {
        let home = try await home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let echo = try await TargetServer.echo()
        // Saved only at shutdown: the interval is an hour.
        let first = try await ServerProcess.start(config(home, "usage: {save_interval: 1h}"))
        defer { first.process.signal(SIGKILL) }
        let (proxy, port) = (first.port, echo.port)
        let moved = 300_000
        let echoed = try await onThread { () throws -> Int in
            let socket = try session(proxy, "alice", to: port)
            try socket.send([UInt8](repeating: 0x33, count: moved))
            let back = try socket.receive(exactly: moved).count
            socket.shutdownWrite()
            _ = try socket.receiveUntilEOF()
            return back
        }
        #expect(echoed == moved)
        #expect(await first.process.waitForStderr(containing: "user=alice cmd=connect"))
        first.process.signal(SIGTERM)
        #expect(await first.process.waitForExit() == 0)
        // Restarted with a monthly quota below what alice used: every byte was kept, and she is over it.
        let quota = 500_000
        let second = try await ServerProcess.start(config(home, "quotas: [{who: [user:alice], bytes: \(quota), period: month}]"))
        defer { second.process.signal(SIGKILL) }
        let report = try usage(try await adminPort(of: second))
        let saved = total(report, "alice")
        #expect(saved.up == moved && saved.down == moved, "saved \(saved) of \(moved) each way")
        let month = user(report, "alice")?["month"] as? [String: Any]
        #expect(month?["up"] as? Int == moved, "\(String(describing: month))")
        let quotas = user(report, "alice")?["quotas"] as? [[String: Any]]
        #expect(quotas?.first?["period"] as? String == "month" && quotas?.first?["exceeded"] as? Bool == true, "\(String(describing: quotas))")
        let (alice, bob) = try await onThread { () throws -> (SOCKSReplyCode?, SOCKSReplyCode?) in
            let alice = try socksLogin(proxyPort: second.port, user: Array("alice".utf8), password: Array("alice-pw".utf8), destination: loopback4(port))
            let bob = try socksLogin(proxyPort: second.port, user: Array("bob".utf8), password: Array("bob-pw".utf8), destination: loopback4(port))
            return (alice.reply, bob.reply)
        }
        #expect(alice == .notAllowed)
        #expect(bob == .succeeded)
        await echo.stop()
    }

    @Test func aCorruptStateFileIsReportedMovedAsideAndThePreviousSnapshotKept() async throws {
        let home = try await home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        var previous = UsageBook()
        previous.add("alice", up: 123_456, down: 654_321, on: .today)
        try UsageStore.save(previous, to: home + "/state")
        try UsageStore.save(previous, to: home + "/state")
        try "{\"version\":1,\"users\":{\"alice\":".write(toFile: home + "/state/usage.json", atomically: false, encoding: .utf8)
        let server = try await ServerProcess.start(config(home))
        defer { server.process.signal(SIGKILL) }
        let report = try usage(try await adminPort(of: server))
        #expect(total(report, "alice") == (123_456, 654_321))
        #expect(server.process.stderr.contains("level=error") && server.process.stderr.contains("\(home)/state/usage.json is corrupt"))
        let names = try FileManager.default.contentsOfDirectory(atPath: home + "/state")
        #expect(names.contains { $0.hasPrefix("usage.json.corrupt-") }, "\(names)")
        #expect(report["state_file"] as? String == home + "/state/usage.json")
    }

    /// Both snapshots unreadable with quotas set: starting from zero would give every user a fresh
    /// allowance, so the server refuses to start, names both files and says how to go on; the
    /// files stay where they are, so a second start refuses too.
    @Test func withQuotasTwoCorruptSnapshotsStopTheStartInsteadOfCountingFromZero() async throws {
        let home = try await home()
        defer { try? FileManager.default.removeItem(atPath: home) }
        try "{\"version\":1,\"users\":{\"alice\":".write(toFile: home + "/state/usage.json", atomically: false, encoding: .utf8)
        try "not json".write(toFile: home + "/state/usage.json.prev", atomically: false, encoding: .utf8)
        let path = try temporaryFile(config(home, "quotas: [{who: [group:staff], bytes: 1000000, period: day}]"))
        for _ in 0..<2 {
            let start = try await runProcess(sallyportExecutable(), ["--config", path], environment: ["LD_PRELOAD": ""], timeout: 30)
            #expect(start.status != 0)
            #expect(start.stderr.contains("\(home)/state/usage.json is corrupt") && start.stderr.contains("usage.json.prev")
                && start.stderr.contains("move the files aside"), "\(start.stderr)")
        }
        #expect(FileManager.default.fileExists(atPath: home + "/state/usage.json"))
        // Without quotas nothing is at stake: the file is moved aside and counting starts again.
        let server = try await ServerProcess.start(config(home))
        defer { server.process.signal(SIGKILL) }
        #expect(server.process.stderr.contains("usage totals start from zero"))
    }
}
