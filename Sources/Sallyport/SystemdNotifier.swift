import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// Tells systemd how the service is doing (the `sd_notify` protocol): one datagram per message to
/// the `AF_UNIX` socket that `$NOTIFY_SOCKET` names (a path, or an abstract name written with a
/// leading `@`). Without `$NOTIFY_SOCKET` (not started by systemd) it does nothing.
public struct SystemdNotifier: Sendable {
    /// The socket's address bytes (`@` already turned into the abstract namespace's NUL), or nil.
    private let address: [UInt8]?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty, path.utf8.count < 108,
            path.hasPrefix("/") || path.hasPrefix("@")
        else {
            address = nil
            return
        }
        var bytes = Array(path.utf8)
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }
        address = bytes
    }

    /// Whether systemd listens (`$NOTIFY_SOCKET` was set).
    public var isActive: Bool { address != nil }

    /// Every listener is bound: the service is up.
    public func ready(status: String) { send(["READY=1", "STATUS=" + status]) }

    /// A reload starts (systemd then waits for `ready(status:)`).
    public func reloading() { send(["RELOADING=1", "MONOTONIC_USEC=\(Self.monotonicMicroseconds())"]) }

    /// The service is shutting down.
    public func stopping(status: String) { send(["STOPPING=1", "STATUS=" + status]) }

    /// Sends the lines as one message; a failure is ignored (systemd may be gone, and the service
    /// must not stop for that).
    func send(_ lines: [String]) {
        guard let address else { return }
        let message = Array(lines.map { String($0.map { $0 == "\n" ? " " : $0 }) }.joined(separator: "\n").utf8)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var unixAddress = sockaddr_un()
        unixAddress.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &unixAddress.sun_path) { path in
            for (index, byte) in address.enumerated() { path[index] = byte }
        }
        // An abstract name's length counts exactly its bytes; a path's includes no NUL either.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + address.count)
        _ = withUnsafePointer(to: &unixAddress) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), socketAddress, length) }
            }
        }
    }

    static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}
