import SallyportTestSupport
import Foundation
import SOCKSProtocol
import Testing

/// The Debian package that `make deb` builds (and `make test` builds before the tests): lintian's
/// verdict, then installed on this machine, run, checked and purged. Needs root, as CI has.
@Suite(.serialized, .system, .timeLimit(.minutes(3))) struct PackageTests {
    /// The system as it is: `make test` runs the tests under pam_wrapper and nss_wrapper, whose
    /// user and group files must not stand in for the real ones when dpkg and adduser look up users.
    static let system = ["LD_PRELOAD": ""]

    /// The newest package in dist/.
    func package() throws -> String {
        let dist = packageRoot() + "/dist"
        let debs = ((try? FileManager.default.contentsOfDirectory(atPath: dist)) ?? []).filter { $0.hasSuffix(".deb") }.sorted()
        return dist + "/" + (try #require(debs.last, "no package in dist/: run `make deb` (make test does)"))
    }

    @Test func lintianFindsNoError() async throws {
        let deb = try package()
        let lintian = try #require(which("lintian"), "lintian is not installed (make test installs it)")
        let result = try await runProcess(lintian, ["--fail-on", "error", deb], environment: Self.system, timeout: 300)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(!result.stdout.contains("E: "), "\(result.stdout)")
        // Installed size: the binary is stripped (an unstripped one was over 100 MB) and links
        // FoundationEssentials only (Foundation would bring 34 MB of ICU data).
        let info = try await runProcess("/usr/bin/dpkg-deb", ["-f", deb, "Installed-Size"], environment: Self.system)
        let kilobytes = Int(info.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .max
        #expect(kilobytes < 40 * 1024, "installed size \(kilobytes) KiB")
    }

    @Test func installRunAsTheServiceUserAndPurgeWithoutLeftovers() async throws {
        let deb = try package()
        let install = try await runProcess("/usr/bin/dpkg", ["-i", deb], environment: Self.system, timeout: 120)
        #expect(install.status == 0, "\(install.stdout)\(install.stderr)")
        defer { runBlocking("/usr/bin/dpkg", ["-P", "sallyport"], environment: Self.system) }
        let files = try await runProcess("/usr/bin/dpkg", ["-L", "sallyport"], environment: Self.system).stdout.split(separator: "\n").map(String.init)
        for path in ["/usr/bin/sallyport", "/usr/lib/systemd/system/sallyport.service", "/usr/share/man/man1/sallyport.1.gz",
                     "/usr/share/man/man5/sallyport.yaml.5.gz", "/usr/share/doc/sallyport/copyright", "/etc/logrotate.d/sallyport"] {
            #expect(files.contains(path), "\(path) not in the package")
        }
        #expect(try await runProcess("/usr/bin/getent", ["passwd", "sallyport"], environment: Self.system).status == 0)
        // Group shadow only when asked for.
        #expect(!(try await runProcess("/usr/bin/id", ["-Gn", "sallyport"], environment: Self.system).stdout.contains("shadow")))

        // The unit passes systemd's own check (its man page is installed now).
        // (`make test` installs systemd, which brings systemd-analyze.)
        let analyze = try #require(which("systemd-analyze"), "systemd-analyze is missing: run through `make test`")
        let verify = try await runProcess(analyze, ["verify", "/usr/lib/systemd/system/sallyport.service"], environment: Self.system)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")

        // The installed binary, as the service user, reads the installed configuration...
        let runuser = which("runuser") ?? "/usr/sbin/runuser"
        let check = try await runProcess(
            runuser, ["-u", "sallyport", "--", "/usr/bin/sallyport", "check-config", "/etc/sallyport/sallyport.yaml"], environment: Self.system)
        #expect(check.status == 0, "\(check.stderr)")
        // ...and serves with it: a loopback target stays behind the guard (reply 2), as shipped.
        let echo = try await TargetServer.echo()
        // setpriv execs the server itself (runuser would stand between it and SIGTERM).
        let setpriv = which("setpriv") ?? "/usr/bin/setpriv"
        let server = try BackgroundProcess(
            setpriv, ["--reuid=sallyport", "--regid=sallyport", "--init-groups", "--",
                      "/usr/bin/sallyport", "--config", "/etc/sallyport/sallyport.yaml", "--listen", "127.0.0.1:0"],
            environment: Self.system)
        defer { server.signal(SIGKILL) }
        #expect(await server.waitForStderr(containing: "msg=listening"))
        let line = server.stderr.split(separator: "\n").first { $0.contains("msg=listening") }.map(String.init) ?? ""
        let port = Int(logfmtFields(line)["addresses"]?.split(separator: ":").last ?? "") ?? 0
        let reply = try await onThread { try TestSocket(host: "127.0.0.1", port: port).socksConnect(to: loopback4(echo.port)).code }
        #expect(reply == .notAllowed)
        server.signal(SIGTERM)
        #expect(await server.waitForExit() == 0)
        await echo.stop()

        // Purged: no file of the package, no user, no /etc/sallyport.
        let purge = try await runProcess("/usr/bin/dpkg", ["-P", "sallyport"], environment: Self.system, timeout: 120)
        #expect(purge.status == 0, "\(purge.stdout)\(purge.stderr)")
        var isDirectory: ObjCBool = false
        let left = files.filter { FileManager.default.fileExists(atPath: $0, isDirectory: &isDirectory) && !isDirectory.boolValue }
        #expect(left.isEmpty, "left behind: \(left)")
        #expect(!FileManager.default.fileExists(atPath: "/etc/sallyport"))
        #expect(try await runProcess("/usr/bin/getent", ["passwd", "sallyport"], environment: Self.system).status != 0)
    }

    /// The unit's sandbox, scored by systemd itself, and logins under it: the installed binary as
    /// the service user with no new privileges and no capability (what setpriv can impose of the
    /// unit here, where systemd is not PID 1), checking a real Unix account through the installed
    /// PAM service (pam_unix) once the shadow opt-in is made, and a user file account.
    @Test func theHardenedUnitScoresAtMost2Point5AndLoginsWorkUnderIt() async throws {
        let deb = try package()
        let install = try await runProcess("/usr/bin/dpkg", ["-i", deb], environment: Self.system, timeout: 120)
        #expect(install.status == 0, "\(install.stdout)\(install.stderr)")
        defer { runBlocking("/usr/bin/dpkg", ["-P", "sallyport"], environment: Self.system) }
        let unit = "/usr/lib/systemd/system/sallyport.service"
        let analyze = try #require(which("systemd-analyze"), "systemd-analyze is missing: run through `make test`")
        let security = try await runProcess(analyze, ["security", "--offline=true", "--no-pager", unit], environment: Self.system)
        let overall = security.stdout.split(separator: "\n").first { $0.contains("Overall exposure level") }.map(String.init) ?? ""
        let score = Double(overall.split(separator: ":").last?.split(separator: " ").first ?? "") ?? 99
        #expect(score <= 2.5, "\(overall)")
        let text = try String(contentsOfFile: unit, encoding: .utf8)
        #expect(!text.split(separator: "\n").contains { $0.hasPrefix("SupplementaryGroups=") }, "no group shadow by default")
        for directive in ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
                          "SystemCallFilter=@system-service", "CapabilityBoundingSet=\n", "RestrictAddressFamilies="] {
            #expect(text.contains(directive), "\(directive) missing")
        }

        // A Unix account of the test's own, with a password in /etc/shadow.
        let account = "spt\(getpid() % 100_000)"
        let made = try await runProcess("/usr/sbin/useradd", ["--no-create-home", "--shell", "/usr/sbin/nologin", account], environment: Self.system)
        #expect(made.status == 0, "\(made.stderr)")
        defer { runBlocking("/usr/sbin/userdel", [account], environment: Self.system) }
        _ = try await runProcess("/usr/sbin/chpasswd", [], input: Data("\(account):unix-pw-1\n".utf8), environment: Self.system)
        let home = TestRun.current.temporaryPath("package-logins")
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        chmod(home, 0o755)
        defer { try? FileManager.default.removeItem(atPath: home) }
        let users = home + "/users"
        let passwd = try await runProcess("/usr/bin/sallyport", ["passwd", "filed", "--file", users], input: Data("file-pw-1\n".utf8), environment: Self.system)
        #expect(passwd.status == 0, "\(passwd.stderr)")
        _ = try await runProcess("/usr/bin/chown", ["root:sallyport", users], environment: Self.system)
        let config = home + "/sallyport.yaml"
        try """
            listen:
              - {address: 127.0.0.1:0, methods: [username], auth: pam}
              - {address: 127.0.0.1:0, methods: [username], auth: file}
            auth: {pam: {service: sallyport}, file: \(users), fail_delay: 0}
            rules: [{action: allow, to: [127.0.0.0/8]}]
            """.write(toFile: config, atomically: true, encoding: .utf8)
        chmod(config, 0o644)
        let echo = try await TargetServer.echo()
        defer { Task { await echo.stop() } }

        /// The server as the unit starts it, as far as setpriv can: its user and groups, no new
        /// privileges, no capabilities; the ports of its two listeners.
        func serve() async throws -> (BackgroundProcess, pam: Int, file: Int) {
            let setpriv = which("setpriv") ?? "/usr/bin/setpriv"
            let server = try BackgroundProcess(
                setpriv, ["--reuid=sallyport", "--regid=sallyport", "--init-groups", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--",
                          "/usr/bin/sallyport", "--config", config],
                environment: Self.system)
            guard await server.waitForStderr(containing: "msg=listening") else { throw TestSocketError("no start: \(server.stderr)", errno: 0) }
            let line = server.stderr.split(separator: "\n").first { $0.contains("msg=listening") }.map(String.init) ?? ""
            let ports = (logfmtFields(line)["addresses"] ?? "").split(separator: ",").compactMap { Int($0.split(separator: ":").last ?? "") }
            guard ports.count == 2 else { throw TestSocketError("listening line \(line)", errno: 0) }
            return (server, ports[0], ports[1])
        }
        func login(_ port: Int, _ user: String, _ password: String) async throws -> SOCKSReplyCode? {
            try await onThread { try socksLogin(proxyPort: port, user: Array(user.utf8), password: Array(password.utf8), destination: loopback4(echo.port)).reply }
        }

        // Without the opt-in: the user file works, a Unix password cannot be checked.
        var (server, pamPort, filePort) = try await serve()
        #expect(try await login(filePort, "filed", "file-pw-1") == .succeeded)
        #expect(try await login(filePort, "filed", "wrong") == nil)
        #expect(try await login(pamPort, account, "unix-pw-1") == nil, "no group shadow, no pam_unix check of another user")
        server.signal(SIGKILL)
        _ = await server.waitForExit()

        // The opt-in README describes: group shadow for the service user.
        #expect(try await runProcess("/usr/sbin/usermod", ["-aG", "shadow", "sallyport"], environment: Self.system).status == 0)
        (server, pamPort, filePort) = try await serve()
        defer { server.signal(SIGKILL) }
        #expect(try await login(pamPort, account, "unix-pw-1") == .succeeded, "\(server.stderr)")
        #expect(try await login(pamPort, account, "unix-pw-2") == nil)
        #expect(try await login(filePort, "filed", "file-pw-1") == .succeeded)
        #expect(!server.stderr.contains("unix-pw") && !server.stderr.contains("file-pw"), "no password reaches the log")
    }
}
