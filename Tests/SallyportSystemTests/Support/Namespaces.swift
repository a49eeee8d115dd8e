import SallyportTestSupport
import Foundation
import Testing

/// For programs that must see the real system rather than the tests' pam_wrapper and nss_wrapper
/// (which also race each other creating their directories when several start at once).
let withoutWrappers = ["LD_PRELOAD": ""]

/// A network namespace of the test's own, with a resolv.conf and hosts file of its own; removed
/// when `body` ends, thrown or not.
func withNetworkNamespace<T>(resolvConf: String, hosts: String, _ body: (String) async throws -> T) async throws -> T {
    let name = "sallyport-test-\(UInt32.random(in: 0...UInt32.max))"
    let ip = which("ip") ?? "/usr/sbin/ip"
    let added = try await runProcess(ip, ["netns", "add", name], environment: withoutWrappers)
    guard added.status == 0 else {
        throw TestSocketError("cannot create a network namespace (ip netns add; this test needs root): \(added.stderr)", errno: 0)
    }
    let directory = "/etc/netns/\(name)"
    defer {
        try? FileManager.default.removeItem(atPath: directory)
        let remove = Process()
        remove.executableURL = URL(fileURLWithPath: ip)
        remove.arguments = ["netns", "delete", name]
        try? remove.run()
        remove.waitUntilExit()
    }
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    try resolvConf.write(toFile: directory + "/resolv.conf", atomically: true, encoding: .utf8)
    try hosts.write(toFile: directory + "/hosts", atomically: true, encoding: .utf8)
    _ = try await runProcess(ip, ["netns", "exec", name, ip, "link", "set", "lo", "up"], environment: withoutWrappers)
    return try await body(name)
}

/// A veth cable from this host into a network namespace of the test's own: `hostIP` on this
/// side, `farIP` at the far end (a /30 of 10.199/16). `cut()` deletes it, so that nothing sent at
/// either end (a FIN, a reset, a keepalive answer) reaches the other.
struct Cable: Sendable {
    let namespace: String
    let hostSide: String
    let hostIP: String
    let farIP: String

    func cut() async throws -> Bool {
        try await runProcess(which("ip") ?? "/usr/sbin/ip", ["link", "delete", hostSide], environment: withoutWrappers).status == 0
    }
}

/// Adds a veth pair: `link` on this host with `hostAddresses`, its peer (`link` + "n") in
/// `namespace` with `farAddress` (each "IP/prefix"), both up.
func addLink(_ link: String, to namespace: String, hostAddresses: [String], farAddress: String) async throws {
    let ip = which("ip") ?? "/usr/sbin/ip"
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
    let delete = Process()
    delete.executableURL = URL(fileURLWithPath: which("ip") ?? "/usr/sbin/ip")
    delete.arguments = ["link", "delete", link]
    delete.environment = ProcessInfo.processInfo.environment.merging(withoutWrappers) { $1 }
    delete.standardError = FileHandle.nullDevice
    try? delete.run()
    delete.waitUntilExit()
}

/// Runs `body` with a cable into a namespace of its own; both are removed when it ends.
func withCable<T>(_ body: (Cable) async throws -> T) async throws -> T {
    let tag = UInt16.random(in: 1...65_000)
    let hostSide = "spv-h\(tag)"
    let subnet = "10.199.\(tag % 250).\(tag % 2 * 4)"
    let (hostIP, farIP) = (subnet.replacingLastOctet(+1), subnet.replacingLastOctet(+2))
    return try await withNetworkNamespace(resolvConf: "", hosts: "127.0.0.1 localhost\n") { namespace in
        // Gone already when the test cut it.
        defer { deleteLink(hostSide) }
        try await addLink(hostSide, to: namespace, hostAddresses: [hostIP + "/30"], farAddress: farIP + "/30")
        return try await body(Cable(namespace: namespace, hostSide: hostSide, hostIP: hostIP, farIP: farIP))
    }
}

extension String {
    /// "10.0.0.4" with `delta` added to its last number: "10.0.0.5".
    fileprivate func replacingLastOctet(_ delta: Int) -> String {
        let parts = split(separator: ".")
        return parts.dropLast().joined(separator: ".") + ".\((Int(parts.last ?? "0") ?? 0) + delta)"
    }
}
