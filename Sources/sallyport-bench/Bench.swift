import ArgumentParser
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Sallyport's load generator: plain blocking sockets on threads, so that what it measures is the
/// proxy (and it measures a direct connection the same way, to show it is not the bottleneck).
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sallyport-bench",
        abstract: "Load generator for SOCKS5 proxies (loopback only).",
        subcommands: [Connections.self, Bulk.self, Idle.self, UDPRoundTrips.self, Echo.self, FloorProxy.self])
}

/// `HOST:PORT` on the command line.
struct Endpoint: ExpressibleByArgument {
    var host: String
    var port: Int

    init?(argument: String) {
        guard let colon = argument.lastIndex(of: ":"), let port = Int(argument[argument.index(after: colon)...]) else { return nil }
        var host = String(argument[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host
        self.port = port
    }
}

/// Connection rate: each worker opens a connection, negotiates (optionally with credentials), asks
/// for CONNECT to the target, exchanges a few bytes and closes, in a loop for a fixed time.
struct Connections: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure connections per second and latency.")

    @Option(help: "The SOCKS5 proxy; without it, connect to the target directly.") var proxy: Endpoint?
    @Option(help: "The echo server to reach; without it, one in this process.") var target: Endpoint?
    @Option(help: "RFC 1929 user name.") var user: String?
    @Option(help: "RFC 1929 password.") var password: String?
    @Option(help: "Concurrent workers.") var workers: Int = 8
    @Option(help: "Seconds to run.") var seconds: Double = 5

    func run() throws {
        raiseFileLimit()
        let echo = target == nil ? try startEchoServer() : nil
        let target = self.target ?? Endpoint(argument: "\(targetHost):\(echo!.localAddress!.port!)")!
        let deadline = monotonicSeconds() + seconds
        let results = (0..<workers).map { _ in WorkerResult() }
        var threads: [pthread_t] = []
        for index in 0..<workers {
            let job = ConnectJob(proxy: proxy, target: target, user: user, password: password, deadline: deadline, result: results[index])
            threads.append(startThread { job.run() })
        }
        for thread in threads { pthread_join(thread, nil) }
        var latencies = results.flatMap(\.latencies)
        latencies.sort()
        let count = latencies.count
        let failures = results.map(\.failures).reduce(0, +)
        func percentile(_ p: Double) -> Double { count == 0 ? 0 : latencies[min(count - 1, Int(Double(count) * p))] * 1000 }
        let firstError = results.compactMap(\.firstError).first ?? ""
        print(
            "{\"connections\":\(count),\"per_second\":\(rounded(Double(count) / seconds)),\"p50_ms\":\(rounded(percentile(0.5))),\"p99_ms\":\(rounded(percentile(0.99))),\"failures\":\(failures),\"first_error\":\"\(firstError)\"}"
        )
    }
}

func rounded(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }

final class WorkerResult {
    var latencies: [Double] = []
    var failures = 0
    var firstError: String?
}

struct ConnectJob {
    let proxy: Endpoint?
    let target: Endpoint
    let user: String?
    let password: String?
    let deadline: Double
    let result: WorkerResult

    func run() {
        let request = socksRequest()
        var buffer = [UInt8](repeating: 0, count: 512)
        while monotonicSeconds() < deadline {
            let start = monotonicSeconds()
            do {
                let endpoint = proxy ?? target
                let fd = try connectTCP(host: endpoint.host, port: endpoint.port)
                defer { close(fd) }
                if proxy != nil {
                    try sendAll(fd, request.greeting)
                    try receiveExactly(fd, &buffer, 2)
                    if let auth = request.auth {
                        try sendAll(fd, auth)
                        try receiveExactly(fd, &buffer, 2)
                        guard buffer[1] == 0 else { throw BenchError("authentication refused") }
                    }
                    try sendAll(fd, request.connect)
                    try receiveExactly(fd, &buffer, 10)
                    guard buffer[1] == 0 else { throw BenchError("reply \(buffer[1])") }
                }
                try sendAll(fd, Array("ping".utf8))
                try receiveExactly(fd, &buffer, 4)
                result.latencies.append(monotonicSeconds() - start)
            } catch {
                result.failures += 1
                if result.firstError == nil { result.firstError = "\(error)" }
            }
        }
    }

    func socksRequest() -> (greeting: [UInt8], auth: [UInt8]?, connect: [UInt8]) {
        var auth: [UInt8]?
        var greeting: [UInt8] = [5, 1, 0]
        if let user, let password {
            greeting = [5, 1, 2]
            auth = [1, UInt8(user.utf8.count)] + Array(user.utf8) + [UInt8(password.utf8.count)] + Array(password.utf8)
        }
        let address = try! SocketAddress(ipAddress: target.host, port: target.port)
        var connect: [UInt8] = [5, 1, 0]
        switch address {
        case .v4(let v4):
            connect += [1] + withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6):
            connect += [4] + withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        default:
            break
        }
        connect += [UInt8(target.port >> 8), UInt8(target.port & 0xFF)]
        return (greeting, auth, connect)
    }
}

/// A NIO echo server, the target every scenario reaches.
struct Echo: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a TCP echo server; prints its port.")

    @Option(help: "Address to listen on.") var listen: Endpoint = Endpoint(argument: "127.0.0.1:0")!

    func run() throws {
        raiseFileLimit()
        let channel = try startEchoServer(listen)
        print(channel.localAddress!.port!)
        fflush(nil)
        try channel.closeFuture.wait()
    }
}

/// A TCP echo server in this process, on NIO.
/// The loopback address the in-process targets listen on: not 127.0.0.1, so that the TIME_WAIT
/// sockets piled up there by connection-rate runs never exhaust the ports a listener can bind.
let targetHost = "127.0.0.2"

func startEchoServer(_ listen: Endpoint = Endpoint(argument: "\(targetHost):0")!) throws -> any Channel {
    try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.backlog, value: 4096)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.allowRemoteHalfClosure, value: true)
        .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 256 * 1024))
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
        }
        .bind(host: listen.host, port: listen.port).wait()
}

/// Raises the soft limit on open files to the hard limit (idle-session runs need thousands).
func raiseFileLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.write(data, promise: nil) }
    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event { context.close(mode: .output, promise: nil) }
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

// MARK: Plain sockets

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

func connectTCP(host: String, port: Int) throws -> Int32 {
    let address = try SocketAddress(ipAddress: host, port: port)
    let fd = socket(address.protocol == .inet6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let status = address.withSockAddr { connect(fd, $0, socklen_t($1)) }
    guard status == 0 else {
        let error = BenchError("connect: \(String(cString: strerror(errno)))")
        close(fd)
        throw error
    }
    return fd
}

func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
        let sent = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
        guard sent > 0 else { throw BenchError("send: \(String(cString: strerror(errno)))") }
        offset += sent
    }
}

func receiveExactly(_ fd: Int32, _ buffer: inout [UInt8], _ count: Int) throws {
    var offset = 0
    while offset < count {
        let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + offset, count - offset, 0) }
        guard got > 0 else { throw BenchError(got == 0 ? "EOF" : "recv: \(String(cString: strerror(errno)))") }
        offset += got
    }
}

/// Starts a joinable thread running `body`.
func startThread(_ body: @escaping () -> Void) -> pthread_t {
    final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    pthread_create(&thread, nil, { argument in
        let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    return thread
}
