import SallyportTestSupport
import NIOCore
import NIOPosix
import SOCKSProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Echoes every datagram back to its sender.
final class UDPEchoHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: one instance per channel, used on its event loop only.
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: envelope.data)), promise: nil)
    }
}

/// A UDP echo server on loopback.
struct UDPEchoServer {
    let channel: any Channel
    var port: Int { channel.localAddress!.port! }

    static func start(host: String = "127.0.0.1") async throws -> UDPEchoServer {
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
            // Room for a test's whole burst (the default, about 200 KiB, holds three 64 KiB datagrams).
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UDPEchoHandler()) }
            }
            .bind(host: host, port: 0).get()
        ServerScope.register { try? await channel.close() }
        return UDPEchoServer(channel: channel)
    }

    func stop() async { try? await channel.close() }
}

/// A blocking UDP socket for tests, bound to `host` on a free port.
final class TestUDPSocket: @unchecked Sendable {
    // @unchecked: a descriptor, used from one thread at a time.
    let fd: Int32
    let family: Int32

    init(host: String = "127.0.0.1", port: Int = 0, timeout: Double = 2) throws {
        let address = try SocketAddress(ipAddress: host, port: port)
        family = address.protocol == .inet6 ? AF_INET6 : AF_INET
        fd = socket(family, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw TestSocketError("socket") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        // Room for a test's whole burst: past net.core.rmem_max when the tests run as root.
        var size: Int32 = 4 << 20
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        let result = address.withSockAddr { bind(fd, $0, socklen_t($1)) }
        guard result == 0 else { throw TestSocketError("bind \(host)") }
    }

    deinit { close(fd) }

    /// A UDP port on 127.0.0.1 that is free now and that nothing binding port 0 can be given: it
    /// lies below the kernel's ephemeral range (32768 and up), where no test binds on its own.
    static func portOutsideTheEphemeralRange() throws -> Int {
        for _ in 0..<200 {
            let candidate = Int.random(in: 20_000..<32_768)
            if (try? TestUDPSocket(port: candidate)) != nil { return candidate }
        }
        throw TestSocketError("no free UDP port from 20000 to 32767", errno: 0)
    }

    var port: Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return withUnsafePointer(to: &storage) {
            family == AF_INET
                ? $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
                : $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
        }
    }

    func send(_ bytes: [UInt8], to address: SocketAddress) throws {
        let sent = address.withSockAddr { pointer, size in
            bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, bytes.count, 0, pointer, socklen_t(size)) }
        }
        guard sent == bytes.count else { throw TestSocketError("sendto") }
    }

    /// One datagram, or nil after the timeout.
    /// The next datagram, or nil after the socket's timeout (or `timeout` seconds, when given).
    func receive(timeout: Double? = nil) -> [UInt8]? {
        if let timeout {
            var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard got >= 0 else { return nil }
        return Array(buffer[0..<got])
    }

    /// A SOCKS datagram: header for `destination`, then `data`.
    static func packet(to destination: SOCKSEndpoint, fragment: UInt8 = 0, _ data: [UInt8]) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeUDPDatagramHeader(UDPDatagramHeader(fragment: fragment, endpoint: destination))
        buffer.writeBytes(data)
        return Array(buffer.readableBytesView)
    }

    /// Splits a relayed datagram into its header and data.
    static func unpack(_ bytes: [UInt8]) throws -> (UDPDatagramHeader, [UInt8]) {
        var buffer = ByteBuffer(bytes: bytes)
        let header = try buffer.readUDPDatagramHeader()
        return (header, Array(buffer.readableBytesView))
    }
}

/// Opens an association: greeting, UDP ASSOCIATE naming `expected` as the client's source; returns
/// the control connection and the relay's address.
func udpAssociate(proxyPort: Int, expected: SOCKSEndpoint = .unspecified, proxyHost: String = "127.0.0.1") throws -> (TestSocket, SOCKSReply) {
    let control = try TestSocket(host: proxyHost, port: proxyPort)
    try control.send(TestSocket.negotiation(.udpAssociate, to: expected))
    try expectBytesHelper(try control.receive(exactly: 2), [5, 0])
    return (control, try control.readReply())
}

extension SOCKSEndpoint {
    /// The socket address of an IP endpoint, for tests.
    var testAddress: SocketAddress {
        get throws {
            switch host {
            case .ipv4(let address): return try SocketAddress(packedIPAddress: ByteBuffer(bytes: address.bytes), port: Int(port))
            case .ipv6(let address): return try SocketAddress(packedIPAddress: ByteBuffer(bytes: address.bytes), port: Int(port))
            case .domain: throw TestSocketError("not an address", errno: 0)
            }
        }
    }
}
