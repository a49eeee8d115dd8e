import SallyportTestSupport
import Foundation
import Testing

/// For programs that must see the real system rather than the tests' pam_wrapper and nss_wrapper
/// (which also race each other creating their directories when several start at once).
let withoutWrappers = ["LD_PRELOAD": ""]

private let ip = which("ip") ?? "/usr/sbin/ip"

/// A network namespace of the test's own, with a resolv.conf and hosts file of its own; removed
/// when `body` ends, thrown or not. Its name carries the run's PID (`TestRun`), so that a run that
/// was killed before it could remove it has it removed by the next.
func withNetworkNamespace<T>(resolvConf: String, hosts: String, _ body: (String) async throws -> T) async throws -> T {
    let name = TestRun.current.uniqueName(TestRun.namespacePrefix)
    let added = try await runProcess(ip, ["netns", "add", name], environment: withoutWrappers)
    guard added.status == 0 else {
        throw TestSocketError("cannot create a network namespace (ip netns add; this test needs root): \(added.stderr)", errno: 0)
    }
    let directory = "/etc/netns/\(name)"
    defer {
        try? FileManager.default.removeItem(atPath: directory)
        runBlocking(ip, ["netns", "delete", name])
    }
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    try resolvConf.write(toFile: directory + "/resolv.conf", atomically: true, encoding: .utf8)
    try hosts.write(toFile: directory + "/hosts", atomically: true, encoding: .utf8)
    _ = try await runProcess(ip, ["netns", "exec", name, ip, "link", "set", "lo", "up"], environment: withoutWrappers)
    return try await body(name)
}

/// A name for a host link of this run: the run's PID and a number (at most 14 characters, so that
/// `addLink`'s peer, the name and "n", fits an interface name).
func uniqueLinkName() -> String {
    TestRun.current.uniqueName(TestRun.linkPrefix)
}

/// A /24 of 10.200/13 that no other test of this run uses: "10.A.B" (add ".host").
func uniqueSubnet24() -> String {
    let number = TestRun.current.nextNumber() % 2048
    return "10.\(200 + number / 256).\(number % 256)"
}

/// A veth cable from this host into a network namespace of the test's own: `hostIP` on this
/// side, `farIP` at the far end (a /30 of a /24 of its own). `cut()` deletes it, so that nothing
/// sent at either end (a FIN, a reset, a keepalive answer) reaches the other.
struct Cable: Sendable {
    let namespace: String
    let hostSide: String
    let hostIP: String
    let farIP: String

    func cut() async throws -> Bool {
        try await runProcess(ip, ["link", "delete", hostSide], environment: withoutWrappers).status == 0
    }
}

/// Adds a veth pair: `link` on this host with `hostAddresses`, its peer (`link` + "n") in
/// `namespace` with `farAddress` (each "IP/prefix"), both up.
func addLink(_ link: String, to namespace: String, hostAddresses: [String], farAddress: String) async throws {
    let far = link + "n"
    var commands = [["link", "add", link, "type", "veth", "peer", "name", far], ["link", "set", far, "netns", namespace]]
    commands += hostAddresses.map { ["addr", "add", $0, "dev", link] }
    commands += [
        ["link", "set", link, "up"], ["netns", "exec", namespace, ip, "addr", "add", farAddress, "dev", far],
        ["netns", "exec", namespace, ip, "link", "set", far, "up"],
    ]
    for arguments in commands {
        let result = try await runProcess(ip, arguments, environment: withoutWrappers)
        guard result.status == 0 else { throw TestSocketError("ip \(arguments.joined(separator: " ")): \(result.stderr)", errno: 0) }
    }
}

/// Deletes a link of this host (and its peer), quietly when it is gone already: for `defer`.
func deleteLink(_ link: String) {
    runBlocking(ip, ["link", "delete", link])
}

/// Runs `body` with a cable into a namespace of its own; both are removed when it ends. Inside,
/// `target.test` names the namespace's loopback.
func withCable<T>(_ body: (Cable) async throws -> T) async throws -> T {
    let hostSide = uniqueLinkName()
    let subnet = uniqueSubnet24()
    let (hostIP, farIP) = (subnet + ".1", subnet + ".2")
    return try await withNetworkNamespace(resolvConf: "", hosts: "127.0.0.1 localhost target.test\n") { namespace in
        // Gone already when the test cut it.
        defer { deleteLink(hostSide) }
        try await addLink(hostSide, to: namespace, hostAddresses: [hostIP + "/30"], farAddress: farIP + "/30")
        return try await body(Cable(namespace: namespace, hostSide: hostSide, hostIP: hostIP, farIP: farIP))
    }
}
