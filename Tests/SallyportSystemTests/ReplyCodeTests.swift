import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Testing

/// A TCP socket on 127.0.0.1 that is bound but does not listen: a connection to its port is
/// refused for as long as it lives, and no other socket can take the port meanwhile.
final class RefusingPort: @unchecked Sendable {
    // @unchecked: a descriptor, closed once.
    let fd: Int32
    let port: Int

    /// - Parameter backlog: listen with this backlog and never accept, instead of refusing.
    init(listenBacklog backlog: Int32? = nil) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSocketError("socket") }
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        var storage = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard address.withSockAddr({ bind(fd, $0, socklen_t($1)) }) == 0,
            backlog.map({ listen(fd, $0) }) ?? 0 == 0,
            withUnsafeMutablePointer(to: &storage, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }) == 0
        else {
            let error = TestSocketError("bind, listen or getsockname")
            close(fd)
            throw error
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: storage.sin_port))
    }

    deinit { close(fd) }
}

/// Every RFC 1928 reply code a CONNECT can get, each through a real path (0x03 and 0x04 from the
/// kernel's routing are in AbuseTests, in a network namespace of their own).
@Suite(.system, .timeLimit(.minutes(3))) struct ReplyCodeTests {
    @Test func refusedConnectionGetsReply05() async throws {
        let refusing = try RefusingPort()
        let proxy = try await TestProxy.start()
        let (reply, closed) = try await onThread { () throws -> (SOCKSReply, Bool) in
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            let reply = try socket.socksConnect(to: loopback4(refusing.port))
            return (reply, socket.waitForClose())
        }
        #expect(reply.code == .connectionRefused)
        #expect(reply.bound == .unspecified)
        #expect(closed)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("reply=5") && $0.contains("end=request_failed") } })
        await proxy.stop()
    }

    @Test(.timing) func aTargetWhoseAcceptQueueIsFullGetsReply06AtTheConnectTimeout() async throws {
        // Backlog 0 holds one connection; once it is taken, the kernel drops further SYNs.
        let full = try RefusingPort(listenBacklog: 0)
        let filler = try TestSocket(host: "127.0.0.1", port: full.port)
        let proxy = try await TestProxy.start { $0.timeouts.connect = .seconds(1) }
        let (reply, elapsed) = try await onThread { () throws -> (SOCKSReply, Double) in
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            let start = Date()
            return (try socket.socksConnect(to: loopback4(full.port)), Date().timeIntervalSince(start))
        }
        #expect(reply.code == .ttlExpired)
        #expect(elapsed >= 0.9 && elapsed < 5, "answered after \(elapsed) s")
        #expect(await proxy.logs.wait { $0.contains { $0.contains("reply=6") && $0.contains("end=request_failed") } })
        _ = filler
        await proxy.stop()
    }

    @Test func unknownNameGetsReply04() async throws {
        let proxy = try await TestProxy.start()
        let reply = try await onThread {
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            return try socket.socksConnect(to: SOCKSEndpoint(host: .domain("no-such-host.invalid"), port: 80))
        }
        #expect(reply.code == .hostUnreachable)
        await proxy.stop()
    }

    @Test func anUnknownCommandGetsReply07AndTheLogNamesIt() async throws {
        let proxy = try await TestProxy.start()
        let (reply, closed) = try await onThread { () throws -> ([UInt8], Bool) in
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            try socket.send([5, 1, 0])
            _ = try socket.receive(exactly: 2)
            // RFC 1928 has commands 0x01-0x03 only; 0x09 is none of them.
            try socket.send([5, 9, 0, 1, 127, 0, 0, 1, 0, 80])
            return (try socket.receive(exactly: 10), socket.waitForClose())
        }
        #expect(reply == [5, 7, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(closed)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("cmd=cmd-9") && $0.contains("reply=7") && $0.contains("end=command_not_supported") } })
        await proxy.stop()
    }

    @Test func anUnknownAddressTypeGetsReply08OverTheWire() async throws {
        let proxy = try await TestProxy.start()
        let (reply, closed) = try await onThread { () throws -> ([UInt8], Bool) in
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            try socket.send([5, 1, 0])
            _ = try socket.receive(exactly: 2)
            // ATYP 0x05 does not exist (0x01 IPv4, 0x03 name, 0x04 IPv6).
            try socket.send([5, 1, 0, 5, 127, 0, 0, 1, 0, 80])
            return (try socket.receive(exactly: 10), socket.waitForClose())
        }
        #expect(reply == [5, 8, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(closed)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("reply=8") && $0.contains("end=protocol_error") } })
        await proxy.stop()
    }
}
