import SallyportTestSupport
import Foundation
import SOCKSProtocol
import Sallyport
import Testing

/// Rules that let a proxy reach the loopback targets of the tests (the guard keeps loopback out of
/// reach otherwise).
let loopbackRules = """

    rules:
      - name: test-loopback
        action: allow
        to: [127.0.0.0/8, "::1/128"]

    """

@Suite(.system, .timeLimit(.minutes(3))) struct CLITests {
    @Test func checkConfigAcceptsTheShippedExample() async throws {
        let result = try await runProcess(sallyportExecutable(), ["check-config", packageRoot() + "/conf/sallyport.yaml"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("valid"))
    }

    @Test func checkConfigNamesLineAndKeyOfEachProblem() async throws {
        let path = try temporaryFile("listen:\n  - 127.0.0.1:70000\nlog:\n  colour: red\n")
        let result = try await runProcess(sallyportExecutable(), ["check-config", path])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(path):2:5: listen[0]: '127.0.0.1:70000': the port must be a number from 0 to 65535"))
        #expect(result.stderr.contains("\(path):4:3: log.colour: unknown key"))
    }

    @Test func theServerMakesItselfNonDumpableOnceItHasReadItsConfiguration() async throws {
        // Seen from outside only for a process that is not root: a non-dumpable process's /proc
        // files belong to root. So: a copy of the binary that user nobody can run, run as nobody.
        let directory = NSTemporaryDirectory() + "sallyport-dumpable-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let binary = directory + "/sallyport"
        try FileManager.default.copyItem(atPath: sallyportExecutable(), toPath: binary)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: binary)
        let server = try BackgroundProcess(
            which("setpriv") ?? "/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--", binary, "--listen", "127.0.0.1:0"])
        defer { server.signal(SIGKILL) }
        #expect(await server.waitForStderr(containing: "msg=listening"), "\(server.stderr)")
        let pid = server.processIdentifier
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        #expect(status.contains("Uid:\t65534"))
        let owner = try FileManager.default.attributesOfItem(atPath: "/proc/\(pid)/status")[.ownerAccountID] as? Int
        #expect(owner == 0, "a dumpable process owns its /proc files")
        server.signal(SIGTERM)
        #expect(await server.waitForExit(timeout: 10) == 0)
    }

    @Test func versionAndHelp() async throws {
        let version = try await runProcess(sallyportExecutable(), ["--version"])
        #expect(version.status == 0)
        #expect(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == sallyportVersion, "\(version.stdout)")
        let help = try await runProcess(sallyportExecutable(), ["run", "--help"])
        #expect(help.stdout.contains("--listen"))
        #expect(help.stdout.contains("--config"))
    }

    @Test func badListenAddressIsRefusedWithAReason() async throws {
        let result = try await runProcess(sallyportExecutable(), ["--listen", "nowhere"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--listen 'nowhere': expected HOST:PORT"))
    }

    @Test func badConfigFileStopsTheServerWithItsErrors() async throws {
        let path = try temporaryFile("timeouts:\n  idle: forever\n")
        let result = try await runProcess(sallyportExecutable(), ["--config", path], timeout: 10)
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(path):2:9: timeouts.idle: 'forever' is not a duration"))
    }

    @Test func listenOnPortZeroLogsEveryBoundAddressAndStopsOnSIGTERM() async throws {
        let echo = try await TargetServer.echo()
        // The echo server is on loopback: an explicit rule lets the proxy reach it.
        let rules = try temporaryFile(loopbackRules)
        let server = try BackgroundProcess(sallyportExecutable(), ["--config", rules, "--listen", "127.0.0.1:0", "--listen", "[::1]:0"])
        defer { server.signal(SIGKILL) }  // stopped even when the test throws
        #expect(await server.waitForStderr(containing: "msg=listening"))
        let line = server.stderr.split(separator: "\n").first { $0.contains("msg=listening") }.map(String.init) ?? ""
        let addresses = logfmtFields(line)["addresses"]?.split(separator: ",").map(String.init) ?? []
        #expect(addresses.count == 2)
        #expect(addresses.first?.hasPrefix("127.0.0.1:") == true)
        #expect(addresses.last?.hasPrefix("[::1]:") == true)

        // A session through the started binary, then SIGTERM: it drains and exits 0.
        let port = Int(addresses.first?.split(separator: ":").last ?? "") ?? 0
        let echoed: [UInt8] = try await onThread {
            let socket = try TestSocket(host: "127.0.0.1", port: port)
            let reply = try socket.socksConnect(to: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port)), payload: [4, 2])
            guard reply.code == .succeeded else { return [] }
            socket.shutdownWrite()
            return try socket.receiveUntilEOF()
        }
        #expect(echoed == [4, 2])
        #expect(await server.waitForStderr(containing: "msg=session"))
        server.signal(SIGTERM)
        #expect(await server.waitForExit() == 0)
        #expect(server.stderr.contains("msg=stopped"))
        await echo.stop()
    }

    @Test func jsonLogFormatWritesOneObjectPerLineSessionsIncluded() async throws {
        let echo = try await TargetServer.echo()
        let server = try await ServerProcess.start("listen: [127.0.0.1:0]\n" + loopbackRules, arguments: ["--log-format", "json"])
        defer { server.process.signal(SIGKILL) }  // stopped even when the test throws
        #expect(server.process.stderr.contains("\"msg\":\"listening\""))
        let echoed = try await onThread { () throws -> [UInt8] in
            let socket = try TestSocket(host: "127.0.0.1", port: server.port)
            guard try socket.socksConnect(to: loopback4(echo.port), payload: [1, 2, 3]).code == .succeeded else { return [] }
            socket.shutdownWrite()
            return try socket.receiveUntilEOF()
        }
        #expect(echoed == [1, 2, 3])
        #expect(await server.process.waitForStderr(containing: "\"msg\":\"session\""))
        server.process.signal(SIGTERM)
        #expect(await server.process.waitForExit() == 0)
        let lines = server.process.stderr.split(separator: "\n").filter { !$0.isEmpty }
        #expect(lines.count >= 3)
        var sessions: [[String: Any]] = []
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["ts"] is String && object?["level"] is String && object?["msg"] is String, "\(line)")
            if object?["msg"] as? String == "session", let object { sessions.append(object) }
        }
        // The access-log line: counts are numbers, names and ids are strings.
        #expect(sessions.count == 1)
        let session = try #require(sessions.first)
        #expect(session["session"] is String)
        #expect(session["cmd"] as? String == "connect")
        #expect(session["dst"] as? String == "127.0.0.1:\(echo.port)")
        #expect(session["rule"] as? String == "test-loopback")
        #expect(session["end"] as? String == "client_closed")
        #expect((session["up"] as? NSNumber)?.intValue == 3 && !(session["up"] is String))
        #expect((session["down"] as? NSNumber)?.intValue == 3 && !(session["down"] is String))
        #expect((session["reply"] as? NSNumber)?.intValue == 0 && !(session["reply"] is String), "\(session)")
        #expect(((session["duration"] as? NSNumber)?.doubleValue ?? -1) >= 0 && !(session["duration"] is String))
        await echo.stop()
    }

    @Test(.timing) func sigtermClosesAnIdleSessionThatOutlivesTheGraceAndExitsCleanly() async throws {
        let echo = try await TargetServer.echo()
        let grace = 1.5
        let server = try await ServerProcess.start("listen: [127.0.0.1:0]\ntimeouts:\n  shutdown_grace: 1500ms\n" + loopbackRules)
        defer { server.process.signal(SIGKILL) }
        let idle = try await onThread { () throws -> TestSocket in
            let socket = try TestSocket(host: "127.0.0.1", port: server.port)
            guard try socket.socksConnect(to: loopback4(echo.port)).code == .succeeded else { throw TestSocketError("connect failed", errno: 0) }
            return socket
        }
        let signalled = Date()
        server.process.signal(SIGTERM)
        #expect(await server.process.waitForStderr(containing: "draining sessions"))
        // Draining: no new connection is taken.
        let accepted = try? await onThread { try TestSocket(host: "127.0.0.1", port: server.port, timeout: 2) }
        #expect(accepted == nil, "a new connection was accepted while draining")
        // The idle session is closed by the server at the end of the grace, and the server exits 0.
        let closed = try await onThread { idle.waitForClose() }
        #expect(closed)
        let status = await server.process.waitForExit(timeout: grace + 2)
        let took = Date().timeIntervalSince(signalled)
        #expect(status == 0)
        #expect(took >= grace - 0.1 && (took <= grace + 2 || underSanitizer), "exited \(took) s after SIGTERM")
        let session = server.process.stderr.split(separator: "\n").first { $0.contains("msg=session") }.map(String.init) ?? ""
        #expect(logfmtFields(session)["end"] == "closed_by_server", "\(session)")
        await echo.stop()
    }

    @Test func sigtermLetsARunningSessionFinishWithinTheGrace() async throws {
        let echo = try await TargetServer.echo()
        let config = try temporaryFile("listen: [127.0.0.1:0]\ntimeouts:\n  shutdown_grace: 30s\n" + loopbackRules)
        let server = try BackgroundProcess(sallyportExecutable(), ["--config", config])
        defer { server.signal(SIGKILL) }  // stopped even when the test throws
        #expect(await server.waitForStderr(containing: "msg=listening"))
        let line = server.stderr.split(separator: "\n").first { $0.contains("msg=listening") }.map(String.init) ?? ""
        let port = Int(logfmtFields(line)["addresses"]?.split(separator: ":").last ?? "") ?? 0
        let socket = try await onThread { () throws -> TestSocket in
            let socket = try TestSocket(host: "127.0.0.1", port: port)
            let reply = try socket.socksConnect(to: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port)))
            guard reply.code == .succeeded else { throw TestSocketError("connect failed", errno: 0) }
            return socket
        }
        server.signal(SIGTERM)
        #expect(await server.waitForStderr(containing: "draining sessions"))
        // The session still works during the grace period, and closes when the client is done.
        let echoed: [UInt8] = try await onThread {
            try socket.send([1, 2, 3])
            let back = try socket.receive(exactly: 3)
            socket.shutdownWrite()
            return back + (try socket.receiveUntilEOF())
        }
        #expect(echoed == [1, 2, 3])
        #expect(await server.waitForExit() == 0)
        await echo.stop()
    }
}

@Suite(.system, .timeLimit(.minutes(3))) struct ReloadTests {
    /// Starts the binary with `yaml` at a path the test can rewrite; returns the process, the path
    /// and the proxy's port.
    func startServer(_ yaml: String) async throws -> (BackgroundProcess, String, Int) {
        let path = try temporaryFile(yaml)
        let server = try BackgroundProcess(sallyportExecutable(), ["--config", path])
        guard await server.waitForStderr(containing: "msg=listening") else { throw TestSocketError("no listening line: \(server.stderr)", errno: 0) }
        let line = server.stderr.split(separator: "\n").first { $0.contains("msg=listening") }.map(String.init) ?? ""
        let port = Int(logfmtFields(line)["addresses"]?.split(separator: ":").last ?? "") ?? 0
        return (server, path, port)
    }

    @Test func sighupChangesTheNextDecisionAndKeepsRunningTransfersAndBrokenFilesAreRefused() async throws {
        let echo = try await TargetServer.echo()
        let allowLoopback = "listen: [127.0.0.1:0]\n" + loopbackRules
        let (server, path, port) = try await startServer(allowLoopback)
        defer { server.signal(SIGKILL) }
        let destination = SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port))

        // A transfer that runs across both reloads: its first half is sent and echoed back before
        // them, its second half after both.
        let running = try await onThread { () throws -> TestSocket in
            let (socket, reply) = try connectAs(nil, proxyPort: port, to: destination)
            guard reply == .succeeded else { throw TestSocketError("first session refused", errno: 0) }
            return socket
        }
        let payload = patternBytes(count: 2 << 20, seed: 11)
        let half = payload.count / 2
        let firstHalf = try await onThread { () throws -> [UInt8] in
            let reader = ThreadedWork { try running.receive(exactly: half) }
            try running.send(Array(payload[..<half]))
            return try reader.join()
        }
        #expect(firstHalf == Array(payload[..<half]))

        // A broken file: the reload fails and the old rules stay.
        try "rules:\n  - action: maybe\n".write(toFile: path, atomically: true, encoding: .utf8)
        server.signal(SIGHUP)
        #expect(await server.waitForStderr(containing: "reload failed"))
        #expect(server.stderr.contains("rules[0].action: 'maybe' is not allow or deny"))
        let (_, stillAllowed) = try await onThread { try connectAs(nil, proxyPort: port, to: destination) }
        #expect(stillAllowed == .succeeded)

        // A valid file without the loopback rule: the next session is refused.
        try "listen: [127.0.0.1:0]\nrules:\n  - name: public-only\n    action: allow\n    to: ['*']\n".write(toFile: path, atomically: true, encoding: .utf8)
        server.signal(SIGHUP)
        #expect(await server.waitForStderr(containing: "configuration reloaded"))
        let (_, refused) = try await onThread { try connectAs(nil, proxyPort: port, to: destination) }
        #expect(refused == .notAllowed)

        // The transfer that started before both reloads goes on and ends whole.
        #expect(server.stderr.components(separatedBy: "configuration reloaded").count - 1 == 1)
        #expect(server.stderr.contains("reload failed"))
        let secondHalf = try await onThread { () throws -> [UInt8] in
            let reader = ThreadedWork { try running.receiveUntilEOF() }
            try running.send(Array(payload[half...]))
            running.shutdownWrite()
            return try reader.join()
        }
        #expect(secondHalf.count == payload.count - half)
        #expect(fnv1a(firstHalf + secondHalf) == fnv1a(payload))
        server.signal(SIGTERM)
        #expect(await server.waitForExit() == 0)
        await echo.stop()
    }

    /// What a reload changes in the running server: methods, limits, timeouts, UDP, quotas and
    /// the access-log file, each seen from a client (a timing test: the negotiation timeout).
    @Test(.timing) func aReloadAppliesMethodsLimitsTimeoutsUDPQuotasAndTheAccessFile() async throws {
        let echo = try await TargetServer.echo()
        let home = try temporaryDirectory("reload")
        for user in ["alice", "bob"] {
            let made = try await runProcess(
                sallyportExecutable(), ["passwd", user, "--file", home + "/users", "--method", "sha512"], input: Data("pw-\(user)\n".utf8))
            #expect(made.status == 0, "\(made.stderr)")
        }
        let common = "auth: {file: \(home)/users, fail_delay: 0s}\nstate_dir: \(home)/state\nlisten: [127.0.0.1:0]\n" + loopbackRules
        let (server, path, port) = try await startServer("methods: [none, username]\n" + common)
        defer { server.signal(SIGKILL) }
        let destination = loopback4(echo.port)
        // Before: method none served, two sessions of one client at once, UDP on; alice moves 1000 bytes.
        let before = try await onThread { () throws -> (none: SOCKSReplyCode?, both: Bool, udp: SOCKSReplyCode?, echoed: Int) in
            let (_, none) = try connectAs(nil, proxyPort: port, to: destination)
            let (first, one) = try connectAs("bob", proxyPort: port, to: destination)
            let (second, two) = try connectAs("bob", proxyPort: port, to: destination)
            let (_, udp) = try connectAs("bob", proxyPort: port, to: .unspecified, command: .udpAssociate)
            let (alice, aliceReply) = try connectAs("alice", proxyPort: port, to: destination)
            guard aliceReply == .succeeded else { return (none, false, udp, 0) }
            try alice.send([UInt8](repeating: 1, count: 1000))
            let echoed = try alice.receive(exactly: 1000).count
            alice.shutdownWrite()
            _ = try alice.receiveUntilEOF()
            _ = (first, second)
            return (none, one == .succeeded && two == .succeeded, udp, echoed)
        }
        #expect(before.none == .succeeded && before.both && before.udp == .succeeded && before.echoed == 1000, "\(before)")
        #expect(await server.waitForStderr(containing: "user=alice cmd=connect"))

        let accessFile = home + "/access.log"
        let after = """
            methods: [username]
            limits: {sessions_per_client: 1}
            timeouts: {negotiation: 1s}
            udp: {enabled: false}
            quotas: [{who: [user:alice], bytes: 1000, period: day}]
            log: {access_file: \(accessFile)}

            """ + common
        try after.write(toFile: path, atomically: true, encoding: .utf8)
        server.signal(SIGHUP)
        #expect(await server.waitForStderr(containing: "configuration reloaded"), "\(server.stderr)")
        let changed = try await onThread {
            () throws -> (none: [UInt8], alice: SOCKSReplyCode?, bob: SOCKSReplyCode?, secondBob: SOCKSReplyCode?, silentClosedIn: Double) in
            let greeting = try TestSocket(host: "127.0.0.1", port: port)
            try greeting.send([5, 1, 0])
            let none = try greeting.receive(exactly: 2)
            let (_, alice) = try connectAs("alice", proxyPort: port, to: destination)
            let (held, bob) = try connectAs("bob", proxyPort: port, to: destination)
            let (_, secondBob) = try connectAs("bob", proxyPort: port, to: destination)
            held.shutdownWrite()
            _ = try held.receiveUntilEOF()
            let silent = try TestSocket(host: "127.0.0.1", port: port, timeout: 20)
            let start = Date()
            _ = silent.waitForClose()
            return (none, alice, bob, secondBob, Date().timeIntervalSince(start))
        }
        #expect(changed.none == [5, 0xFF], "method none is no longer offered")
        #expect(changed.alice == .notAllowed, "alice is over her new quota")
        #expect(changed.bob == .succeeded && changed.secondBob == .notAllowed, "one session per client now: \(changed)")
        // The negotiation timeout is 1 s now (10 s before): closed well before the old one.
        #expect(changed.silentClosedIn >= 0.9 && changed.silentClosedIn < 5, "a silent client closed after \(changed.silentClosedIn) s")
        // UDP is off: the association gets reply 0x07.
        let udp = try await onThread { try connectAs("bob", proxyPort: port, to: .unspecified, command: .udpAssociate).1 }
        #expect(udp == .commandNotSupported)
        // The sessions since the reload are written to the access-log file.
        let logged = await waitUntil(timeout: 10) {
            ((try? String(contentsOfFile: accessFile, encoding: .utf8)) ?? "").contains("user=bob cmd=connect")
        }
        #expect(logged, "no session line in \(accessFile)")
        server.signal(SIGTERM)
        #expect(await server.waitForExit() == 0)
        await echo.stop()
    }

    /// With --listen the addresses are the command line's, but methods follow the file: a reload
    /// that turns logins on takes effect on those listeners too.
    @Test func withListenAReloadStillChangesTheMethods() async throws {
        let path = try temporaryFile("methods: [none]\n" + loopbackRules)
        let server = try BackgroundProcess(sallyportExecutable(), ["--config", path, "--listen", "127.0.0.1:0"])
        defer { server.signal(SIGKILL) }
        #expect(await server.waitForStderr(containing: "msg=listening"))
        let line = server.stderr.split(separator: "\n").first { $0.contains("msg=listening") }.map(String.init) ?? ""
        let port = Int(logfmtFields(line)["addresses"]?.split(separator: ":").last ?? "") ?? 0
        let choice = { @Sendable () throws -> [UInt8] in
            let socket = try TestSocket(host: "127.0.0.1", port: port)
            try socket.send([5, 1, 0])
            return try socket.receive(exactly: 2)
        }
        #expect(try await onThread(choice) == [5, 0])
        try ("methods: [username]\nauth: {pam: {service: sallyport-test}}\n" + loopbackRules).write(toFile: path, atomically: true, encoding: .utf8)
        server.signal(SIGHUP)
        #expect(await server.waitForStderr(containing: "configuration reloaded"))
        #expect(try await onThread(choice) == [5, 0xFF], "method none is no longer offered")
    }

    @Test func checkConfigSaysWhatAFileWithoutRulesAllows() async throws {
        let path = try temporaryFile("listen: [127.0.0.1:1080]\n")
        let result = try await runProcess(sallyportExecutable(), ["check-config", path])
        #expect(result.status == 0)
        #expect(result.stdout.contains("no rules in the file: the default rule applies (every public destination, for everyone"))
        let empty = try temporaryFile("rules: []\n")
        let refused = try await runProcess(sallyportExecutable(), ["check-config", empty])
        #expect(refused.status == 0)
        #expect(refused.stderr.contains("warning: \(empty): no rules, and default_action is deny: every request will be refused"))
        #expect(refused.stdout.contains("0 rule(s), default deny"))
    }
}
