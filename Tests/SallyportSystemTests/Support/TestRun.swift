import SallyportTestSupport
import CTestSupport
import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// This test process's run. Set up once, by the first system test that starts:
/// - its open-file limit is raised to the hard limit (hundreds of sockets at once);
/// - it ends itself when its parent (`swift test`) is killed, so that the programs it started, whose
///   parent-death signal is tied to it, end too;
/// - what a killed earlier run left (network namespaces, veth links, temporary directories, all
///   named with that run's PID) is removed;
/// - its own temporary directory is removed when it exits.
final class TestRun: Sendable {
    static let current = TestRun()

    /// The test process's PID: part of every namespace, link and directory name of this run.
    let id: Int32
    /// Where this run's temporary files go.
    let directory: String
    private let counter = NIOLockedValueBox(0)

    private init() {
        id = getpid()
        directory = NSTemporaryDirectory() + "sallyport-run-\(id)"
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        }
        TestRun.watchParent()
        TestRun.sweepEarlierRuns()
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: TestRun.current.directory) }
    }

    /// Touching `current` sets the run up; this says so where it matters.
    func prepare() {}

    /// A name unique in this run: `prefix`, the run's PID, a dash and a number. Short enough for
    /// an interface name (15 characters) with a one-letter suffix while the prefix has two.
    func uniqueName(_ prefix: String) -> String {
        "\(prefix)\(id)-\(nextNumber())"
    }

    /// A new number each call, from 1.
    func nextNumber() -> Int {
        counter.withLockedValue {
            $0 += 1
            return $0
        }
    }

    /// A path in this run's temporary directory, unique in the run.
    func temporaryPath(_ name: String) -> String {
        "\(directory)/\(name)-\(nextNumber())"
    }

    /// The prefixes of what a run names after its PID: namespaces, host links, directories.
    static let namespacePrefix = "spt"
    static let linkPrefix = "st"

    /// Ends this process when its parent ends (the parent's pidfd turns readable).
    private static func watchParent() {
        let parent = getppid()
        let fd = sallyport_test_pidfd_open(parent)
        guard fd >= 0 else { return }
        if getppid() != parent { kill(getpid(), SIGKILL) }
        Thread.detachNewThread {
            var watch = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            while poll(&watch, 1, -1) < 0, errno == EINTR {}
            kill(getpid(), SIGKILL)
        }
    }

    /// Whether `pid` is a test process that still runs (a reused PID is another program).
    private static func isTestProcess(_ pid: Int32) -> Bool {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe") else { return false }
        return exe.hasSuffix(".xctest") || exe.contains("PackageTests")
    }

    /// The PID in a name made by `uniqueName(prefix)`, or nil when the name is not one.
    private static func owner(of name: Substring, prefix: String) -> Int32? {
        guard name.hasPrefix(prefix) else { return nil }
        return Int32(name.dropFirst(prefix.count).prefix { $0.isNumber })
    }

    /// Removes the namespaces, links and directories of earlier runs whose process is gone.
    private static func sweepEarlierRuns() {
        let ip = which("ip") ?? "/usr/sbin/ip"
        let dead = { (pid: Int32?) in pid.map { $0 != getpid() && !isTestProcess($0) } ?? false }
        for line in runBlocking(ip, ["netns", "list"]).split(separator: "\n") {
            let name = line.split(separator: " ").first ?? ""
            guard dead(owner(of: name, prefix: namespacePrefix)) else { continue }
            _ = runBlocking(ip, ["netns", "delete", String(name)])
            try? FileManager.default.removeItem(atPath: "/etc/netns/\(name)")
        }
        for line in runBlocking(ip, ["-o", "link", "show"]).split(separator: "\n") {
            // "7: st1234-5@if6: <...>"
            let fields = line.split(separator: " ")
            guard fields.count > 1 else { continue }
            let name = fields[1].split(separator: "@").first.map { $0.trimmingCharacters(in: [":"]) } ?? ""
            guard dead(owner(of: Substring(name), prefix: linkPrefix)) else { continue }
            _ = runBlocking(ip, ["link", "delete", name])
        }
        let temporary = NSTemporaryDirectory()
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? [] {
            guard dead(owner(of: Substring(entry), prefix: "sallyport-run-")) else { continue }
            try? FileManager.default.removeItem(atPath: temporary + entry)
        }
    }
}
