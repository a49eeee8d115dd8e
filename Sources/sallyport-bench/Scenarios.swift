import ArgumentParser
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Opens a TCP connection to `target`, through the SOCKS5 `proxy` when given (method none).
func openSession(proxy: Endpoint?, target: Endpoint) throws -> Int32 {
    let endpoint = proxy ?? target
    let fd = try connectTCP(host: endpoint.host, port: endpoint.port)
    guard proxy != nil else { return fd }
    do {
        var buffer = [UInt8](repeating: 0, count: 64)
        let request = ConnectJob(proxy: proxy, target: target, user: nil, password: nil, deadline: 0, result: WorkerResult()).socksRequest()
        // One step at a time: microsocks loses a request sent together with the greeting.
        try sendAll(fd, request.greeting)
        try receiveExactly(fd, &buffer, 2)
        try sendAll(fd, request.connect)
        try receiveExactly(fd, &buffer, 10)
        guard buffer[1] == 0 else { throw BenchError("reply \(buffer[1])") }
        return fd
    } catch {
        close(fd)
        throw error
    }
}

/// Counts bytes; shared by the sink's threads.
final class ByteCounter: Sendable {
    let value = Atomic<Int>(0)
}

/// A sink in this process: accepts on the target address, reads everything, counts it.
func startSink(counter: ByteCounter) throws -> Int {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0002).bigEndian
    var one: Int32 = 1
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0, listen(listener, 128) == 0 else { throw BenchError("sink: \(String(cString: strerror(errno)))") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
    _ = startThread {
        while true {
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return }
            _ = startThread {
                var buffer = [UInt8](repeating: 0, count: 1 << 20)
                while true {
                    let got = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                    guard got > 0 else { break }
                    counter.value.add(got, ordering: .relaxed)
                }
                close(connection)
            }
        }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Bulk throughput: N streams send as fast as they can for a fixed time to a sink.
struct Bulk: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure bulk TCP throughput (client to target).")

    @Option(help: "The SOCKS5 proxy; without it, connect directly.") var proxy: Endpoint?
    @Option(help: "Parallel streams.") var streams: Int = 1
    @Option(help: "Seconds to measure (after one second of warm-up).") var seconds: Double = 5

    func run() throws {
        let counter = ByteCounter()
        let port = try startSink(counter: counter)
        let target = Endpoint(argument: "\(targetHost):\(port)")!
        let stop = Atomic<Bool>(false)
        let errors = Atomic<Int>(0)
        var threads: [pthread_t] = []
        for _ in 0..<streams {
            let fd = try openSession(proxy: proxy, target: target)
            threads.append(
                startThread {
                    let chunk = [UInt8](repeating: 0x5A, count: 256 * 1024)
                    while !stop.load(ordering: .relaxed) {
                        let sent = chunk.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                        if sent <= 0 {
                            errors.add(1, ordering: .relaxed)
                            break
                        }
                    }
                    close(fd)
                })
        }
        usleep(1_000_000)
        let startBytes = counter.value.load(ordering: .relaxed)
        let start = monotonicSeconds()
        usleep(UInt32(seconds * 1_000_000))
        let bytes = counter.value.load(ordering: .relaxed) - startBytes
        let elapsed = monotonicSeconds() - start
        stop.store(true, ordering: .relaxed)
        for thread in threads { pthread_join(thread, nil) }
        let gbits = Double(bytes) * 8 / elapsed / 1e9
        print("{\"bytes\":\(bytes),\"seconds\":\(rounded(elapsed)),\"gbit_per_s\":\(rounded(gbits)),\"errors\":\(errors.load(ordering: .relaxed))}")
    }
}

/// Idle sessions: opens N sessions (each proven with one echo), reports, holds them until a line
/// arrives on standard input, closes them, reports again.
struct Idle: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Open and hold idle relayed sessions.")

    @Option(help: "The SOCKS5 proxy; without it, connect directly.") var proxy: Endpoint?
    @Option(help: "Sessions to open.") var sessions: Int = 5000
    @Option(help: "Bytes each session sends and gets back before it goes idle.") var warmBytes: Int = 1

    func run() throws {
        raiseFileLimit()
        let echo = try startEchoServer()
        let target = Endpoint(argument: "\(targetHost):\(echo.localAddress!.port!)")!
        var fds: [Int32] = []
        fds.reserveCapacity(sessions)
        let warm = [UInt8](repeating: 0x42, count: max(warmBytes, 1))
        var buffer = [UInt8](repeating: 0, count: warm.count)
        var failures = 0
        var firstError = ""
        for _ in 0..<sessions {
            do {
                let fd = try openSession(proxy: proxy, target: target)
                // Send and read back in chunks, so that neither side's socket buffers fill up.
                var offset = 0
                while offset < warm.count {
                    let chunk = min(256 * 1024, warm.count - offset)
                    try sendAll(fd, Array(warm[offset..<(offset + chunk)]))
                    try receiveExactly(fd, &buffer, chunk)
                    offset += chunk
                }
                fds.append(fd)
            } catch {
                failures += 1
                if firstError.isEmpty { firstError = "\(error)" }
                if failures > 50 { break }
            }
        }
        print("{\"open\":\(fds.count),\"failures\":\(failures),\"first_error\":\"\(firstError)\"}")
        fflush(nil)
        _ = readLine()
        for fd in fds { close(fd) }
        print("{\"closed\":\(fds.count)}")
        fflush(nil)
        _ = readLine()
    }
}

/// UDP round trips through an association (or directly) to a UDP echo in this process, with a
/// window of datagrams in flight.
struct UDPRoundTrips: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "udp", abstract: "Measure UDP round trips per second.")

    @Option(help: "The SOCKS5 proxy; without it, send directly.") var proxy: Endpoint?
    @Option(help: "Seconds to run.") var seconds: Double = 5
    @Option(help: "Datagrams in flight.") var window: Int = 32
    @Option(help: "Payload bytes per datagram.") var size: Int = 512

    func run() throws {
        let echo = try DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UDPEcho()) }
            }
            .bind(host: targetHost, port: 0).wait()
        let echoPort = echo.localAddress!.port!

        let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        _ = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(udp, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(udp, $0, &length) } }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(udp, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var bufferSize: Int32 = 4 << 20
        setsockopt(udp, SOL_SOCKET, SO_RCVBUF, &bufferSize, socklen_t(MemoryLayout<Int32>.size))

        var header: [UInt8] = []
        var destination = try SocketAddress(ipAddress: targetHost, port: echoPort)
        var control: Int32 = -1
        if let proxy {
            control = try connectTCP(host: proxy.host, port: proxy.port)
            let localPort = UInt16(bigEndian: local.sin_port)
            var reply = [UInt8](repeating: 0, count: 12)
            try sendAll(control, [5, 1, 0])
            try receiveExactly(control, &reply, 2)
            try sendAll(control, [5, 3, 0, 1, 0, 0, 0, 0, UInt8(localPort >> 8), UInt8(localPort & 0xFF)])
            try receiveExactly(control, &reply, 10)
            guard reply[1] == 0, reply[3] == 1 else { throw BenchError("udp associate reply \(reply[1])") }
            let relayHost = "\(reply[4]).\(reply[5]).\(reply[6]).\(reply[7])"
            destination = try SocketAddress(ipAddress: relayHost == "0.0.0.0" ? proxy.host : relayHost, port: Int(reply[8]) << 8 | Int(reply[9]))
            header = [0, 0, 0, 1, 127, 0, 0, 2, UInt8(echoPort >> 8), UInt8(echoPort & 0xFF)]
        }
        let datagram = header + [UInt8](repeating: 0x33, count: size)
        var receiveBuffer = [UInt8](repeating: 0, count: 65_536)
        var sent = 0
        var received = 0
        var lost = 0
        let deadline = monotonicSeconds() + seconds
        let start = monotonicSeconds()
        while monotonicSeconds() < deadline {
            for _ in 0..<window {
                let result = destination.withSockAddr { address, size in
                    datagram.withUnsafeBytes { sendto(udp, $0.baseAddress, $0.count, 0, address, socklen_t(size)) }
                }
                if result > 0 { sent += 1 }
            }
            var outstanding = window
            while outstanding > 0 {
                let got = receiveBuffer.withUnsafeMutableBytes { recv(udp, $0.baseAddress, $0.count, 0) }
                if got <= 0 {
                    lost += outstanding
                    break
                }
                received += 1
                outstanding -= 1
            }
        }
        let elapsed = monotonicSeconds() - start
        if control >= 0 { close(control) }
        close(udp)
        print("{\"sent\":\(sent),\"received\":\(received),\"lost\":\(lost),\"round_trips_per_s\":\(rounded(Double(received) / elapsed))}")
    }
}

final class UDPEcho: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}
