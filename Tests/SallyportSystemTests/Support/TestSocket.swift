import SallyportTestSupport
import Foundation
import SOCKSProtocol
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

struct TestSocketError: Error, CustomStringConvertible {
    var description: String
    init(_ what: String, errno code: Int32 = errno) { description = "\(what): \(String(cString: strerror(code)))" }
}

/// A blocking TCP client socket with a receive timeout: the plain client every test can read.
final class TestSocket: @unchecked Sendable {
    // @unchecked: the descriptor is only an Int32; tests use one socket from one thread at a time,
    // except the both-directions test, which reads on one thread and writes on another (safe for
    // a socket).
    let fd: Int32

    /// Connects to `host:port` (an IPv4 or IPv6 literal), from `source` when given (say
    /// 127.0.1.7: all of 127/8 is this host's, so one machine can be many clients).
    init(host: String, port: Int, from source: String? = nil, timeout: Double = 10) throws {
        let address = try SocketAddress(ipAddress: host, port: port)
        // Held in a local until it is connected: a class whose initializer throws once its stored
        // properties are set runs its deinit, which would close the descriptor a second time
        // (by then, perhaps, another test's socket).
        let local = try source.map { try SocketAddress(ipAddress: $0, port: 0) }
        let fd = socket(address.protocol == .inet6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSocketError("socket") }
        if let local {
            guard local.withSockAddr({ bind(fd, $0, socklen_t($1)) }) == 0 else {
                let error = TestSocketError("bind \(source ?? "")")
                close(fd)
                throw error
            }
        }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let result = address.withSockAddr { pointer, size in connect(fd, pointer, socklen_t(size)) }
        guard result == 0 else {
            let error = TestSocketError("connect \(host):\(port)")
            close(fd)
            throw error
        }
        self.fd = fd
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw TestSocketError("send") }
            offset += sent
        }
    }

    /// Reads exactly `count` bytes; fails on EOF or timeout first.
    func receive(exactly count: Int) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let got = result.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + offset, count - offset, 0) }
            if got == 0 { throw TestSocketError("EOF after \(offset) of \(count) bytes", errno: 0) }
            guard got > 0 else { throw TestSocketError("recv after \(offset) of \(count) bytes") }
            offset += got
        }
        return result
    }

    /// Reads until EOF (or `limit` bytes); fails on timeout.
    func receiveUntilEOF(limit: Int = 64 << 20) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while result.count < limit {
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if got == 0 { return result }
            guard got > 0 else { throw TestSocketError("recv after \(result.count) bytes") }
            result.append(contentsOf: chunk[0..<got])
        }
        return result
    }

    /// True when the peer closed (EOF or reset) before `timeout` seconds.
    func waitForClose() -> Bool {
        var byte: UInt8 = 0
        while true {
            let got = recv(fd, &byte, 1, 0)
            if got == 0 { return true }
            if got < 0 { return errno == ECONNRESET }
        }
    }

    /// True when the peer closed within `timeout` seconds (this call only; the socket's own
    /// timeout is set back after).
    func waitForClose(timeout: Double) -> Bool {
        var saved = timeval()
        var length = socklen_t(MemoryLayout<timeval>.size)
        getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &saved, &length)
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        defer { setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &saved, length) }
        return waitForClose()
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    // MARK: SOCKS client steps

    /// The bytes of a greeting with method none and a request, in one piece (a pipelining client).
    static func negotiation(_ command: SOCKSCommand, to destination: SOCKSEndpoint) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeClientGreeting(ClientGreeting(methods: [.none]))
        buffer.writeSOCKSRequest(SOCKSRequest(command: command, destination: destination))
        return Array(buffer.readableBytesView)
    }

    /// Greeting with method none, then a request; returns the reply.
    func socksConnect(to destination: SOCKSEndpoint, payload: [UInt8] = []) throws -> SOCKSReply {
        try send(Self.negotiation(.connect, to: destination) + payload)
        try expectBytesHelper(try receive(exactly: 2), [5, 0])
        return try readReply()
    }

    func readReply() throws -> SOCKSReply {
        var buffer = ByteBuffer(bytes: try receive(exactly: 5))
        let extra: Int
        switch buffer.getInteger(at: 3, as: UInt8.self)! {
        case 1: extra = 4 + 2 - 1
        case 4: extra = 16 + 2 - 1
        case 3: extra = Int(buffer.getInteger(at: 4, as: UInt8.self)!) + 2
        default: throw TestSocketError("bad ATYP in reply", errno: 0)
        }
        buffer.writeBytes(try receive(exactly: extra))
        guard let reply = try buffer.readSOCKSReply() else { throw TestSocketError("short reply", errno: 0) }
        return reply
    }
}

/// Fails the surrounding test when the bytes differ (a macro-free helper usable off the test task).
func expectBytesHelper(_ actual: [UInt8], _ expected: [UInt8]) throws {
    guard actual == expected else { throw TestSocketError("expected \(expected), got \(actual)", errno: 0) }
}

/// Runs blocking work on its own thread, so the cooperative pool never blocks on a socket.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}

/// Work on a thread of its own, waited for with a blocking `join()`: a second blocking client
/// inside `onThread` (a reader beside a writer), never a task on the cooperative pool.
final class ThreadedWork<T: Sendable>: @unchecked Sendable {
    // @unchecked: `result` is written once, before `done` is signalled, and read after it.
    private var result: Result<T, any Error>?
    private let done = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () throws -> T) {
        let thread = Thread { [self] in
            result = Result { try body() }
            done.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    func join() throws -> T {
        done.wait()
        return try result!.get()
    }
}

/// Deterministic pseudo-random bytes.
func patternBytes(count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    return (0..<count).map { _ in
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return UInt8(truncatingIfNeeded: state)
    }
}

/// FNV-1a, to compare large payloads by hash in failure messages.
func fnv1a(_ bytes: [UInt8]) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash ^= UInt64(byte)
        hash &*= 0x100_0000_01b3
    }
    return hash
}
