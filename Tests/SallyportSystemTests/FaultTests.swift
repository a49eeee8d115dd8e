import SallyportTestSupport
import Foundation
import NIOCore
import NIOPosix
import SOCKSProtocol
import Testing

/// Accepts, reads a little, then resets the connection (SO_LINGER 0 and close: RST, not FIN).
final class ResettingHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: one instance per channel, used on its event loop only.
    typealias InboundIn = ByteBuffer
    private var received = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytes
        guard received >= 64 * 1024 else { return }
        let channel = context.channel
        guard let provider = channel as? any SocketOptionProvider else { return }
        provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// Accepts and never reads: only backpressure keeps a sender from filling the proxy's memory.
final class SilentHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: stateless.
    typealias InboundIn = ByteBuffer

    func handlerAdded(context: ChannelHandlerContext) {
        _ = context.channel.setOption(.autoRead, value: false)
    }
}

/// What a broken or hostile peer does to a session, against the real binary.
@Suite(.serialized, .system, .timeLimit(.minutes(3))) struct FaultTests {
    /// Starts the binary with the loopback rules (and `extra` YAML); returns it and its port.
    func server(_ extra: String = "") async throws -> (BackgroundProcess, Int) {
        let server = try await ServerProcess.start(loopbackRules + extra, arguments: ["--listen", "127.0.0.1:0"])
        return (server.process, server.port)
    }

    @Test func aTargetThatResetsMidTransferEndsTheSessionCleanly() async throws {
        let target = try await TargetServer.start { ResettingHandler() }
        let (server, port) = try await server()
        defer { server.signal(SIGKILL) }
        let closed = try await onThread { () throws -> Bool in
            let socket = try TestSocket(host: "127.0.0.1", port: port)
            guard try socket.socksConnect(to: loopback4(target.port)).code == .succeeded else { return false }
            // Upload until the proxy closes on us (the target reset after 64 KiB).
            let chunk = [UInt8](repeating: 7, count: 16 * 1024)
            for _ in 0..<1000 {
                do { try socket.send(chunk) } catch { return true }
            }
            return socket.waitForClose()
        }
        #expect(closed)
        #expect(await server.waitForStderr(containing: "end=target_error"), "\(server.stderr)")
        let session = server.stderr.split(separator: "\n").first { $0.contains("msg=session") }.map(String.init) ?? ""
        #expect(Int(logfmtFields(session)["up"] ?? "") ?? 0 >= 64 * 1024, "\(session)")
        // The server goes on serving.
        let echo = try await TargetServer.echo()
        let reply = try await onThread { try TestSocket(host: "127.0.0.1", port: port).socksConnect(to: loopback4(echo.port)).code }
        #expect(reply == .succeeded)
    }

    @Test func aTargetThatNeverReadsCostsTheProxyNoMoreThanItsBuffers() async throws {
        let target = try await TargetServer.start { SilentHandler() }
        let (server, port) = try await server()
        defer { server.signal(SIGKILL) }
        let pid = server.processIdentifier
        let before = residentKiB(pid) ?? 0
        let sent = try await onThread { () throws -> Int in
            let socket = try TestSocket(host: "127.0.0.1", port: port, timeout: 0.5)
            guard try socket.socksConnect(to: loopback4(target.port)).code == .succeeded else { return 0 }
            // Push as much as the path takes in 3 s: 256 MiB if nothing held it back.
            let chunk = [UInt8](repeating: 1, count: 256 * 1024)
            var sent = 0
            let deadline = Date().addingTimeInterval(3)
            while sent < 256 << 20, Date() < deadline {
                do { try socket.send(chunk) } catch { break }  // the send timeout: the path is full
                sent += chunk.count
            }
            return sent
        }
        let after = residentKiB(pid) ?? 0
        // The kernel's buffers and the relay's one read in flight, not the 256 MiB offered.
        #expect(sent < 64 << 20, "\(sent) bytes went in")
        #expect(after - before < 16 * 1024 || underSanitizer, "RSS grew by \(after - before) KiB")
    }

    @Test func sighupEveryTenthOfASecondDropsNoSessionAndCorruptsNoByte() async throws {
        let echo = try await TargetServer.echo()
        let (server, port) = try await server("\nlimits:\n  bandwidth_per_user: 0\n")
        defer { server.signal(SIGKILL) }
        // A SIGHUP every 100 ms for 10 s.
        let reloads = Task {
            for _ in 0..<100 {
                server.signal(SIGHUP)
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        // Four transfers of 4 MiB each, sent over the whole 10 s, each echoed back whole.
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for seed in 1...4 {
                group.addTask {
                    try await onThread {
                        let data = patternBytes(count: 4 << 20, seed: UInt64(seed))
                        let socket = try TestSocket(host: "127.0.0.1", port: port)
                        guard try socket.socksConnect(to: loopback4(echo.port)).code == .succeeded else { return false }
                        let reader = ThreadedWork { try socket.receiveUntilEOF(limit: 8 << 20) }
                        for offset in stride(from: 0, to: data.count, by: 64 * 1024) {
                            try socket.send(Array(data[offset..<min(offset + 64 * 1024, data.count)]))
                            usleep(140_000)  // spread over the reloads: 64 chunks in about 9 s
                        }
                        socket.shutdownWrite()
                        return fnv1a(try reader.join()) == fnv1a(data)
                    }
                }
            }
            var all: [Bool] = []
            for try await result in group { all.append(result) }
            return all
        }
        await reloads.value
        #expect(results == [true, true, true, true])
        // Signals that arrive while a reload runs are folded into it, so fewer than 100 reloads.
        #expect(server.stderr.components(separatedBy: "configuration reloaded").count - 1 >= 50)
        let sessions = server.stderr.split(separator: "\n").filter { $0.contains("msg=session") }
        #expect(sessions.count == 4)
        #expect(sessions.allSatisfy { $0.contains("end=client_closed") || $0.contains("end=target_closed") }, "\(sessions)")
    }
}

extension FaultTests {
    @Test func associationsRefusedForABusyPortRangeKeepNoDescriptor() async throws {
        // The range's one port is held by the test: every association fails its bind.
        let taken = try TestUDPSocket()
        let server = try await ServerProcess.start(
            loopbackRules + "\nudp:\n  port_range: \(taken.port)-\(taken.port)\n", arguments: ["--listen", "127.0.0.1:0"])
        defer { server.process.signal(SIGKILL) }
        let attempts = 40
        let before = openDescriptors(server.pid)
        let codes = try await onThread { try (0..<attempts).map { _ in try udpAssociate(proxyPort: server.port).1.code } }
        #expect(codes.allSatisfy { $0 == .generalFailure }, "\(codes)")
        // Each refusal is logged once its session is over and its sockets are closed.
        #expect(await server.process.waitForStderr(containing: "msg=session", count: attempts))
        let after = openDescriptors(server.pid)
        #expect(before != nil && after != nil)
        #expect((after ?? 99) - (before ?? 0) < 5, "descriptors went from \(before ?? -1) to \(after ?? -1)")
        _ = taken
    }
}
