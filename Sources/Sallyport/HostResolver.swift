import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Why a name could not be resolved.
struct ResolutionError: Error, CustomStringConvertible {
    var host: String
    var reason: String
    var description: String { "cannot resolve \(host): \(reason)" }
}

/// Resolves host names with the system resolver (`getaddrinfo`, both families), on a thread pool so
/// that a slow lookup never blocks an event loop.
struct HostResolver: Sendable {
    let threadPool: NIOThreadPool

    /// The pool lookups run on: its own, so that slow DNS (a resolver timing out takes seconds)
    /// neither waits behind nor holds up other blocking work. Lives as long as the process.
    static let lookupPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 16)
        pool.start()
        return pool
    }()

    /// The addresses of `host`, IPv6 and IPv4 as the system orders them, without duplicates.
    ///
    /// A lookup still waiting for a thread when `cancellation` is cancelled (its session ended)
    /// fails without asking the resolver: under a flood of slow names, lookups of clients long gone
    /// would otherwise hold the pool for everyone else.
    func resolve(host: String, port: Int, on eventLoop: any EventLoop, cancellation: LookupCancellation? = nil) -> EventLoopFuture<[SocketAddress]> {
        threadPool.runIfActive(eventLoop: eventLoop) {
            if cancellation?.isCancelled == true { throw ResolutionError(host: host, reason: "lookup cancelled") }
            return try Self.getaddrinfo(host: host, port: port)
        }
    }

    static func getaddrinfo(host: String, port: Int) throws -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_protocol = Int32(IPPROTO_TCP)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = Glibc.getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let first = list else {
            throw ResolutionError(host: host, reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(list) }
        var result: [SocketAddress] = []
        var current: UnsafeMutablePointer<addrinfo>? = first
        while let entry = current {
            current = entry.pointee.ai_next
            guard let address = entry.pointee.ai_addr else { continue }
            var socketAddress: SocketAddress
            switch entry.pointee.ai_family {
            case AF_INET:
                var ipv4 = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
                ipv4.sin_port = in_port_t(UInt16(port).bigEndian)
                socketAddress = SocketAddress(ipv4, host: host)
            case AF_INET6:
                var ipv6 = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
                ipv6.sin6_port = in_port_t(UInt16(port).bigEndian)
                socketAddress = SocketAddress(ipv6, host: host)
            default:
                continue
            }
            if !result.contains(socketAddress) { result.append(socketAddress) }
        }
        guard !result.isEmpty else { throw ResolutionError(host: host, reason: "no IPv4 or IPv6 address") }
        return result
    }
}

/// Lets a session call off its queued lookup once nobody waits for the answer.
final class LookupCancellation: Sendable {
    private let cancelled = NIOLockedValueBox(false)

    var isCancelled: Bool { cancelled.withLockedValue { $0 } }

    func cancel() { cancelled.withLockedValue { $0 = true } }
}

/// A resolver for NIO's happy-eyeballs connector that answers with addresses already looked up (and,
/// later, already checked by the policy).
final class FixedAddressResolver: Resolver, Sendable {
    let addresses: [SocketAddress]
    let eventLoop: any EventLoop

    init(addresses: [SocketAddress], eventLoop: any EventLoop) {
        self.addresses = addresses
        self.eventLoop = eventLoop
    }

    func initiateAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        eventLoop.makeSucceededFuture(addresses.filter { $0.protocol == .inet })
    }

    func initiateAAAAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        eventLoop.makeSucceededFuture(addresses.filter { $0.protocol == .inet6 })
    }

    func cancelQueries() {}
}
