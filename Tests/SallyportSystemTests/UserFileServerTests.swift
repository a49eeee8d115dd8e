import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Testing

/// Accounts from a user file in the real binary: hashes made by mkpasswd, htpasswd and
/// `sallyport passwd`, real clients, groups in rules, reloads, and the time a refusal takes.
@Suite(.system, .timeLimit(.minutes(3))) struct UserFileServerTests {
    let cleanEnvironment = ["http_proxy": "", "https_proxy": "", "all_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": "", "ALL_PROXY": "", "no_proxy": "", "LD_PRELOAD": ""]

    /// A directory of the test's own, removed at the end.
    func directory() throws -> String {
        let path = NSTemporaryDirectory() + "sallyport-users-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// alice (yescrypt by mkpasswd, groups staff and dev), bob (bcrypt by htpasswd -B, no groups),
    /// carol (yescrypt by `sallyport passwd`, group ops).
    func makeUsers(in directory: String) async throws -> String {
        let mkpasswd = try #require(which("mkpasswd"), "mkpasswd (Debian whois) is not installed; `make test` installs it")
        let htpasswd = try #require(which("htpasswd"), "htpasswd (Debian apache2-utils) is not installed; `make test` installs it")
        let yescrypt = try await runProcess(mkpasswd, ["-m", "yescrypt", "--stdin"], input: Data("alice-pw\n".utf8), environment: ["LD_PRELOAD": ""])
        let bcrypt = try await runProcess(htpasswd, ["-nbB", "bob", "bob-pw"], environment: ["LD_PRELOAD": ""])
        let aliceHash = yescrypt.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let bobLine = bcrypt.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(aliceHash.hasPrefix("$y$") && bobLine.hasPrefix("bob:$2y$"), "\(yescrypt.stderr) \(bcrypt.stderr)")
        let path = directory + "/users"
        try "# made by the test\nalice:\(aliceHash):staff,dev\n\(bobLine)\n".write(toFile: path, atomically: true, encoding: .utf8)
        let carol = try await passwd(["carol", "--file", path, "--groups", "ops"], input: "carol-pw\n")
        #expect(carol.status == 0, "\(carol.stderr)")
        return path
    }

    func passwd(_ arguments: [String], input: String) async throws -> ProcessResult {
        try await runProcess(sallyportExecutable(), ["passwd"] + arguments, input: Data(input.utf8), environment: ["LD_PRELOAD": ""])
    }

    func server(users: String, extra: String = "", rules: String = loopbackRules) async throws -> ServerProcess {
        try await ServerProcess.start("""
            listen: [127.0.0.1:0]
            methods: [username]
            auth:
              file: \(users)
            \(extra)
            """ + rules)
    }

    func login(_ port: Int, _ user: String, _ password: String, to destination: SOCKSEndpoint) throws -> (status: UInt8, reply: SOCKSReplyCode?) {
        let outcome = try socksLogin(proxyPort: port, user: Array(user.utf8), password: Array(password.utf8), destination: destination)
        return (outcome.status, outcome.reply)
    }

    @Test func curlAndPySocksWithYescryptAndBcryptUsers() async throws {
        let home = try directory()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let users = try await makeUsers(in: home)
        let http = try await TargetServer.start { HTTPResponder(body: "file ok\n") }
        let echo = try await TargetServer.echo()
        let server = try await server(users: users)
        defer { server.process.signal(SIGKILL) }
        let curl = try #require(which("curl"))
        for (user, password) in [("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "carol-pw")] {
            let good = try await runProcess(
                curl, ["-sS", "--max-time", "10", "-x", "socks5h://\(user):\(password)@127.0.0.1:\(server.port)", "http://localhost:\(http.port)/"],
                environment: cleanEnvironment)
            #expect(good.status == 0 && good.stdout == "file ok\n", "\(user): \(good.stderr)")
        }
        let bad = try await runProcess(
            curl, ["-sS", "--max-time", "10", "-x", "socks5h://alice:bob-pw@127.0.0.1:\(server.port)", "http://localhost:\(http.port)/"],
            environment: cleanEnvironment)
        #expect(bad.status != 0 && bad.stdout.isEmpty)
        let path = try pySocksLoginScript(target: "localhost", message: "ping through the user file")
        for (user, password) in [("bob", "bob-pw"), ("alice", "alice-pw")] {
            let good = try await runProcess("/usr/bin/python3", [path, "\(server.port)", "\(echo.port)", user, password], environment: cleanEnvironment)
            #expect(good.stdout == "ping through the user file\n", "\(user): \(good.stderr)")
        }
        let wrong = try await runProcess("/usr/bin/python3", [path, "\(server.port)", "\(echo.port)", "bob", "alice-pw"], environment: cleanEnvironment)
        #expect(wrong.status == 3)
        let unknown = try await runProcess("/usr/bin/python3", [path, "\(server.port)", "\(echo.port)", "mallory", "bob-pw"], environment: cleanEnvironment)
        #expect(unknown.status == 3)
        #expect(await server.process.waitForStderr(containing: "end=auth_failed", count: 3))
        #expect(!server.process.stderr.contains("bob-pw") && !server.process.stderr.contains("alice-pw"))
        await http.stop()
        await echo.stop()
    }

    @Test func groupsFromTheFileFeedGroupRules() async throws {
        let home = try directory()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let users = try await makeUsers(in: home)
        let echo = try await TargetServer.echo()
        let server = try await server(
            users: users,
            rules: """

                rules:
                  - {name: staff-only, action: allow, who: [group:staff], to: [127.0.0.0/8]}
                  - {name: ops-high-ports, action: allow, who: [group:ops], to: [127.0.0.0/8], ports: [1-1023]}
                """)
        defer { server.process.signal(SIGKILL) }
        let port = echo.port
        let outcomes = try await onThread {
            [
                try login(server.port, "alice", "alice-pw", to: loopback4(port)),
                try login(server.port, "bob", "bob-pw", to: loopback4(port)),
                try login(server.port, "carol", "carol-pw", to: loopback4(port)),
            ]
        }
        #expect(outcomes.first?.status == 0 && outcomes.first?.reply == .succeeded)
        #expect(outcomes[1].status == 0 && outcomes[1].reply == .notAllowed)
        // carol's group has a rule, for other ports.
        #expect(outcomes[2].status == 0 && outcomes[2].reply == .notAllowed)
        #expect(await server.process.waitForStderr(containing: "user=alice cmd=connect"))
        let aliceLine = server.process.stderr.split(separator: "\n").first { $0.contains("msg=session") && $0.contains("user=alice") }
        #expect(aliceLine?.contains("rule=staff-only") == true)
        await echo.stop()
    }

    @Test func aReloadAddsAndRemovesAUserAndABrokenFileKeepsTheRunningOnes() async throws {
        let home = try directory()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let users = try await makeUsers(in: home)
        let echo = try await TargetServer.echo()
        let server = try await server(users: users)
        defer { server.process.signal(SIGKILL) }
        let port = echo.port
        #expect(try await onThread { try login(server.port, "dave", "dave-pw", to: loopback4(port)).status } == 1)
        // Added with `sallyport passwd`, then a reload.
        let added = try await passwd(["dave", "--file", users], input: "dave-pw\n")
        #expect(added.status == 0 && added.stdout.contains("added user dave"), "\(added.stderr)")
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "configuration reloaded"))
        #expect(try await onThread { try login(server.port, "dave", "dave-pw", to: loopback4(port)) } == (0, .succeeded))
        // alice logs in (and is remembered by the cache), then is removed: the reload forgets her.
        #expect(try await onThread { try login(server.port, "alice", "alice-pw", to: loopback4(port)) } == (0, .succeeded))
        let removed = try await passwd(["alice", "--file", users, "--delete"], input: "")
        #expect(removed.status == 0, "\(removed.stderr)")
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "configuration reloaded", count: 2))
        #expect(try await onThread { try login(server.port, "alice", "alice-pw", to: loopback4(port)).status } == 1)
        // A line the server cannot take: the reload fails, naming the file and line, and the running
        // accounts stay.
        let text = try String(contentsOfFile: users, encoding: .utf8)
        try (text + "eve:$1$Suxu57gt$YmiRLLlGqOiZQ3rSO0zzg1\n").write(toFile: users, atomically: true, encoding: .utf8)
        let badLine = text.split(separator: "\n", omittingEmptySubsequences: false).count
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "\(users):\(badLine): user 'eve'"))
        #expect(try await onThread { try login(server.port, "dave", "dave-pw", to: loopback4(port)) } == (0, .succeeded))
        #expect(try await onThread { try login(server.port, "alice", "alice-pw", to: loopback4(port)).status } == 1)
        await echo.stop()
    }

    @Test func passwdWritesAndUpdatesLinesAndCheckAuthReadsTheConfiguredFile() async throws {
        let home = try directory()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let users = home + "/users"
        let made = try await passwd(["alice", "--file", users, "--groups", "staff,dev"], input: "first-pw\n")
        #expect(made.status == 0, "\(made.stderr)")
        var status = stat()
        #expect(stat(users, &status) == 0 && status.st_mode & 0o777 == 0o640)
        try ("# keep this comment\n" + String(contentsOfFile: users, encoding: .utf8)).write(toFile: users, atomically: true, encoding: .utf8)
        chmod(users, 0o600)
        // A new password keeps the groups, the comment and the file's mode.
        let updated = try await passwd(["alice", "--file", users, "--method", "bcrypt"], input: "second-pw\n")
        #expect(updated.status == 0 && updated.stdout.contains("updated user alice"), "\(updated.stderr)")
        let lines = try String(contentsOfFile: users, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2 && lines[0] == "# keep this comment")
        #expect(lines[1].hasPrefix("alice:$2b$11$") && lines[1].hasSuffix(":staff,dev"))
        #expect(stat(users, &status) == 0 && status.st_mode & 0o777 == 0o600)
        // Bad input is refused with a reason and changes nothing.
        for (arguments, reason) in [
            (["bad:name", "--file", users], "user name"), (["bob", "--file", users, "--groups", "a b"], "--groups"),
            (["bob", "--file", users, "--method", "md5"], "--method"), (["nobody", "--file", users, "--delete"], "has no user"),
            (["bob", "--file", users], "a SOCKS5 login carries 1 to 255"),
        ] {
            // The last: a password of 256 bytes, more than RFC 1929 can carry.
            let refused = try await passwd(arguments, input: reason.hasPrefix("a SOCKS5") ? String(repeating: "p", count: 256) + "\n" : "pw\n")
            #expect(refused.status == 1 && refused.stderr.contains(reason), "\(arguments): \(refused.stderr)")
        }
        #expect(try String(contentsOfFile: users, encoding: .utf8).split(separator: "\n").count == 2)
        // check-auth through the configuration's auth.file, as the server would check.
        let config = home + "/sallyport.yaml"
        try "listen: [127.0.0.1:0]\nmethods: [username]\nauth: {file: users, fail_delay: 0}\n".write(toFile: config, atomically: true, encoding: .utf8)
        let check = { (user: String, password: String) in
            try await runProcess(sallyportExecutable(), ["check-auth", user, "--config", config], input: Data("\(password)\n".utf8), environment: ["LD_PRELOAD": ""])
        }
        let right = try await check("alice", "second-pw")
        #expect(right.status == 0 && right.stdout.contains("result: accepted") && right.stdout.contains("groups: staff, dev"), "\(right.stdout) \(right.stderr)")
        #expect(right.stdout.contains("file: \(users)"))
        let wrong = try await check("alice", "first-pw")
        #expect(wrong.status == 1 && wrong.stdout.contains("result: refused") && wrong.stdout.contains("wrong password"))
        let unknown = try await check("mallory", "second-pw")
        #expect(unknown.status == 1 && unknown.stdout.contains("no such user"))
    }

    /// Seconds from sending the credentials to the server's answer, and whether it accepted.
    func timedLogin(_ port: Int, _ user: String, _ password: String) throws -> (accepted: Bool, seconds: Double) {
        let socket = try TestSocket(host: "127.0.0.1", port: port)
        try socket.send([5, 1, 2])
        try expectBytesHelper(try socket.receive(exactly: 2), [5, 2])
        let start = Date()
        try socket.send([1, UInt8(user.utf8.count)] + Array(user.utf8) + [UInt8(password.utf8.count)] + Array(password.utf8))
        let status = try socket.receive(exactly: 2)
        return (status == [1, 0], Date().timeIntervalSince(start))
    }

    static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    @Test(.timing) func anUnknownUserAndAWrongPasswordTakeTheSameTime() async throws {
        let home = try directory()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let users = try await makeUsers(in: home)
        // Without the fail delay: the decoy hash alone evens them out (50 tries each, interleaved).
        let bare = try await server(users: users, extra: "  fail_delay: 0\n  throttle: {max_failures: 0}\n  cache_ttl: 0")
        let port = bare.port
        let (wrong, unknown) = try await onThread { () throws -> ([Double], [Double]) in
            var wrong: [Double] = []
            var unknown: [Double] = []
            for _ in 0..<50 {
                let w = try timedLogin(port, "alice", "not-alices-pw")
                let u = try timedLogin(port, "mallory", "not-alices-pw")
                guard !w.accepted, !u.accepted else { throw TestSocketError("a wrong login was accepted", errno: 0) }
                wrong.append(w.seconds)
                unknown.append(u.seconds)
            }
            return (wrong, unknown)
        }
        // Each pair is measured back to back: the median of their differences cancels the load other
        // tests put on the machine, which the medians of each alone do not.
        let (w, u) = (Self.median(wrong), Self.median(unknown))
        let difference = Self.median(zip(wrong, unknown).map { $0 - $1 })
        #expect(abs(difference) <= 0.1 * max(w, u), "median wrong password \(w) s, unknown user \(u) s, median difference \(difference) s")
        // A right password costs the same hash: the check is real work, not a shortcut.
        let right = try await onThread { try timedLogin(port, "alice", "alice-pw") }
        #expect(right.accepted && right.seconds >= 0.5 * w, "right \(right.seconds) s, wrong \(w) s")
        bare.process.signal(SIGKILL)
        // With the default fail delay (1 s): both are answered a second after the check began.
        let delayed = try await server(users: users, extra: "  throttle: {max_failures: 0}\n  pam: {max_pending: 200, max_pending_per_client: 200}")
        defer { delayed.process.signal(SIGKILL) }
        let delayedPort = delayed.port
        // In rounds of one of each, started together: the two wait in the same queue, so their
        // difference is the server's doing, not the order the machine happened to run them in.
        var pairs: [(wrong: Double, unknown: Double)] = []
        for round in 0..<12 {
            // Each password differs: identical checks in flight would be merged into one.
            let pair = try await onThread { () throws -> (Double, Double) in
                let wrong = ThreadedWork { try timedLogin(delayedPort, "alice", "not-alices-pw-\(round)").seconds }
                let unknown = try timedLogin(delayedPort, "mallory", "not-alices-pw-\(round)").seconds
                return (try wrong.join(), unknown)
            }
            pairs.append(pair)
        }
        let delayedWrong = pairs.map(\.wrong)
        let delayedUnknown = pairs.map(\.unknown)
        #expect(delayedWrong.allSatisfy { $0 >= 1 } && delayedUnknown.allSatisfy { $0 >= 1 }, "wrong \(delayedWrong), unknown \(delayedUnknown)")
        let (dw, du) = (Self.median(delayedWrong), Self.median(delayedUnknown))
        let delayedDifference = Self.median(pairs.map { $0.wrong - $0.unknown })
        #expect(abs(delayedDifference) <= 0.1 * max(dw, du), "median wrong password \(dw) s, unknown user \(du) s, median difference \(delayedDifference) s")
    }

    @Test(.timing) func aThrottledLoginIsAnsweredAfterTheFailDelayLikeAWrongOne() async throws {
        let home = try directory()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let users = try await makeUsers(in: home)
        // The default throttle (5 failures a minute block the client) and a shorter delay.
        let server = try await server(users: users, extra: "  fail_delay: 300ms")
        defer { server.process.signal(SIGKILL) }
        let port = server.port
        let tries = try await onThread { () throws -> [(accepted: Bool, seconds: Double)] in
            try (0..<8).map { index in try timedLogin(port, index % 2 == 0 ? "alice" : "mallory", "guess-\(index)") }
                + [try timedLogin(port, "alice", "alice-pw")]
        }
        // Checked or throttled, wrong or right: every refusal comes after the delay, none sooner.
        #expect(tries.allSatisfy { !$0.accepted && $0.seconds >= 0.3 }, "\(tries)")
        #expect(await server.process.waitForStderr(containing: "msg=session", count: 9))
        let ends = server.process.stderr.split(separator: "\n").filter { $0.contains("msg=session") }.map { logfmtFields(String($0))["end"] ?? "" }
        #expect(ends.filter { $0 == "auth_failed" }.count == 5 && ends.filter { $0 == "auth_refused" }.count == 4, "\(ends)")
    }
}
