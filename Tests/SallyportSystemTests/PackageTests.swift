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
}
