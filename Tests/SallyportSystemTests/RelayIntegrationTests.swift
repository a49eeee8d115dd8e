import SallyportTestSupport
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SOCKSProtocol
import Sallyport
import Testing

/// Sends `payload` through the proxy to an echo server while reading the echo at the same time.
func echoThroughProxy(proxyPort: Int, destination: SOCKSEndpoint, payload: [UInt8]) async throws -> (SOCKSReply, [UInt8]) {
    try await onThread {
        let socket = try TestSocket(host: "127.0.0.1", port: proxyPort)
        let reply = try socket.socksConnect(to: destination)
        guard reply.code == .succeeded else { return (reply, []) }
        let writer = Thread {
            try? socket.send(payload)
            socket.shutdownWrite()
        }
        writer.start()
        let echoed = try socket.receiveUntilEOF()
        return (reply, echoed)
    }
}

/// Records the address of each peer that connects.
final class PeerRecorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let seen: NIOLockedValueBox<[SocketAddress]>

    init(seen: NIOLockedValueBox<[SocketAddress]>) { self.seen = seen }

    func channelActive(context: ChannelHandlerContext) {
        if let peer = context.channel.remoteAddress { seen.withLockedValue { $0.append(peer) } }
        context.fireChannelActive()
    }
}

@Suite(.system, .timeLimit(.minutes(3))) struct RelayIntegrationTests {
    static let mebibyte = patternBytes(count: 1 << 20, seed: 42)

    @Test func connectByIPv4EchoesOneMiBIntact() async throws {
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start()
        let (reply, echoed) = try await echoThroughProxy(
            proxyPort: proxy.port, destination: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port)),
            payload: Self.mebibyte)
        #expect(reply.code == .succeeded)
        #expect(echoed.count == Self.mebibyte.count)
        #expect(fnv1a(echoed) == fnv1a(Self.mebibyte))
        // BND is the real local address of the outbound socket.
        #expect(reply.bound.host == .ipv4(.init(127, 0, 0, 1)))
        #expect(reply.bound.port != 0 && Int(reply.bound.port) != echo.port)
        await proxy.stop()
        await echo.stop()
    }

    @Test func theReplysBoundAddressIsThePeerTheTargetSaw() async throws {
        let seen = NIOLockedValueBox<[SocketAddress]>([])
        let target = try await TargetServer.start { PeerRecorder(seen: seen) }
        let proxy = try await TestProxy.start()
        let reply = try await onThread { () throws -> SOCKSReply in
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            return try socket.socksConnect(to: loopback4(target.port))
        }
        #expect(reply.code == .succeeded)
        #expect(await waitUntil(timeout: 5) { !seen.withLockedValue { $0 }.isEmpty })
        let peer = try #require(seen.withLockedValue { $0 }.first)
        #expect(reply.bound == SOCKSEndpoint(peer), "BND \(reply.bound), the target saw \(peer)")
        await proxy.stop()
        await target.stop()
    }

    @Test func connectByIPv6EchoesOneMiBIntact() async throws {
        let echo = try await TargetServer.echo(host: "::1")
        let proxy = try await TestProxy.start()
        let (reply, echoed) = try await echoThroughProxy(
            proxyPort: proxy.port, destination: SOCKSEndpoint(host: .ipv6(.init(high: 0, low: 1)), port: UInt16(echo.port)),
            payload: Self.mebibyte)
        #expect(reply.code == .succeeded)
        #expect(reply.bound.host == .ipv6(.init(high: 0, low: 1)))
        #expect(fnv1a(echoed) == fnv1a(Self.mebibyte))
        await proxy.stop()
        await echo.stop()
    }

    @Test func connectByNameEchoesOneMiBIntact() async throws {
        // localhost may resolve to ::1 first, where nothing listens: the IPv4 address must still win.
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start()
        let (reply, echoed) = try await echoThroughProxy(
            proxyPort: proxy.port, destination: SOCKSEndpoint(host: .domain("localhost"), port: UInt16(echo.port)),
            payload: Self.mebibyte)
        #expect(reply.code == .succeeded)
        #expect(fnv1a(echoed) == fnv1a(Self.mebibyte))
        await proxy.stop()
        await echo.stop()
    }

    @Test func listenerOnIPv6Serves() async throws {
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start { $0.listeners = [.init(host: "::1", port: 0)] }
        let echoed: [UInt8] = try await onThread {
            let socket = try TestSocket(host: "::1", port: proxy.port)
            let reply = try socket.socksConnect(to: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port)), payload: [1, 2, 3])
            guard reply.code == .succeeded else { return [] }
            socket.shutdownWrite()
            return try socket.receiveUntilEOF()
        }
        #expect(echoed == [1, 2, 3])
        await proxy.stop()
        await echo.stop()
    }

    @Test func targetFirstHalfCloseLetsTheClientFinishItsUpload() async throws {
        let received = NIOLockedValueBox<[UInt8]>([])
        let target = try await TargetServer.start { GreetThenHalfClose(received: received) }
        let proxy = try await TestProxy.start()
        let upload = patternBytes(count: 256 * 1024, seed: 9)
        let greeting: [UInt8] = try await onThread {
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            guard try socket.socksConnect(to: loopback4(target.port)).code == .succeeded else { return [] }
            // The target's words, then its EOF: the client's direction stays open.
            let greeting = try socket.receiveUntilEOF()
            try socket.send(upload)
            socket.shutdownWrite()
            _ = socket.waitForClose()
            return greeting
        }
        #expect(greeting == Array("hello".utf8))
        // Everything the client sent after the target's EOF reached the target.
        #expect(await waitUntil(timeout: 5) { received.withLockedValue { $0.count } >= upload.count })
        #expect(received.withLockedValue { $0 } == upload)
        #expect(await proxy.logs.wait { !$0.filter { $0.contains(" msg=session ") }.isEmpty })
        let fields = logfmtFields(proxy.logs.sessionLines.first ?? "")
        #expect(fields["end"] == "target_closed")
        #expect(fields["up"] == "\(upload.count)")
        #expect(fields["down"] == "5")
        await proxy.stop()
        await target.stop()
    }

    @Test func halfCloseDeliversTheWholeEchoThenEOF() async throws {
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start()
        let payload = patternBytes(count: 300_000, seed: 7)
        let echoed: [UInt8] = try await onThread {
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            let reply = try socket.socksConnect(to: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port)))
            guard reply.code == .succeeded else { return [] }
            let writer = Thread {
                try? socket.send(payload)
                // Our write side ends here; the echo must still come back in full.
                socket.shutdownWrite()
            }
            writer.start()
            return try socket.receiveUntilEOF()
        }
        #expect(echoed == payload)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("end=client_closed") && $0.contains("up=300000 down=300000") } })
        await proxy.stop()
        await echo.stop()
    }

    @Test func pipelinedGreetingRequestAndPayloadInOneSegment() async throws {
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start()
        let echoed: [UInt8] = try await onThread {
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            let destination = SOCKSEndpoint(host: .domain("127.0.0.1"), port: UInt16(echo.port))
            try socket.send(TestSocket.negotiation(.connect, to: destination) + Array("early payload".utf8))
            socket.shutdownWrite()
            return try socket.receiveUntilEOF()
        }
        // Method selection (2) + reply (10) + the echoed payload.
        #expect(echoed.count == 2 + 10 + 13)
        #expect(Array(echoed.suffix(13)) == Array("early payload".utf8))
        await proxy.stop()
        await echo.stop()
    }

    @Test func negotiationFedOneByteAtATimeWorks() async throws {
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start()
        let echoed: [UInt8] = try await onThread {
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            let destination = SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port))
            for byte in TestSocket.negotiation(.connect, to: destination) {
                try socket.send([byte])
                usleep(2000)
            }
            try expectBytesHelper(try socket.receive(exactly: 2), [5, 0])
            let reply = try socket.readReply()
            guard reply.code == .succeeded else { return [] }
            try socket.send([9, 8, 7])
            return try socket.receive(exactly: 3)
        }
        #expect(echoed == [9, 8, 7])
        await proxy.stop()
        await echo.stop()
    }

    @Test func targetThatSpeaksFirstIsHeard() async throws {
        let banner = try await TargetServer.start { BannerHandler(banner: "SSH-2.0-Test\r\n") }
        let proxy = try await TestProxy.start()
        let received: [UInt8] = try await onThread {
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            let reply = try socket.socksConnect(to: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(banner.port)))
            guard reply.code == .succeeded else { return [] }
            return try socket.receive(exactly: 14)
        }
        #expect(received == Array("SSH-2.0-Test\r\n".utf8))
        await proxy.stop()
        await banner.stop()
    }

    @Test(.timing) func slowlorisTricklingAByteEvery100msIsClosedAtTheNegotiationTimeout() async throws {
        let proxy = try await TestProxy.start { $0.timeouts.negotiation = .seconds(1) }
        // A greeting offering 255 methods, one byte every 100 ms: it would take 25 s to complete,
        // and each byte is activity; the negotiation timeout counts from the connection all the same.
        let (closed, elapsed, sent) = try await onThread { () throws -> (Bool, Double, Int) in
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port, timeout: 5)
            let start = Date()
            let greeting: [UInt8] = [5, 255] + [UInt8](repeating: 0x80, count: 255)
            var sent = 0
            for byte in greeting {
                do { try socket.send([byte]) } catch { break }
                sent += 1
                usleep(100_000)  // the client's pace: the behaviour under test
                if Date().timeIntervalSince(start) > 10 { break }
            }
            return (socket.waitForClose(), Date().timeIntervalSince(start), sent)
        }
        #expect(closed)
        #expect(elapsed >= 0.9 && elapsed < 4, "closed after \(elapsed) s, \(sent) bytes sent")
        #expect(sent < 40, "\(sent) bytes were taken")
        #expect(await proxy.logs.wait { $0.contains { $0.contains("end=negotiation_timeout") } })
        await proxy.stop()
    }

    @Test(.timing) func clientFloodingBeforeItsReplyIsClosed() async throws {
        // The authenticator answers late, so the client's request and payload pile up unanswered.
        let proxy = try await TestProxy.start(
            configure: {
                $0.limits.earlyDataBytes = 1024
                $0.listeners[0].methods = [.usernamePassword]
            },
            authenticator: SlowAuthenticator(delay: .seconds(5)))
        let (closed, elapsed) = try await onThread {
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            let start = NIODeadline.now()
            var buffer = ByteBuffer()
            buffer.writeClientGreeting(ClientGreeting(methods: [.usernamePassword]))
            buffer.writeUsernamePasswordRequest(UsernamePasswordRequest(username: "u", password: Password("pw-u")))
            buffer.writeSOCKSRequest(SOCKSRequest(command: .connect, destination: SOCKSEndpoint(host: .domain("example.com"), port: 80)))
            buffer.writeBytes([UInt8](repeating: 0x41, count: 4096))
            try socket.send(Array(buffer.readableBytesView))
            return (socket.waitForClose(), NIODeadline.now() - start)
        }
        #expect(closed)
        #expect(elapsed < .seconds(3))
        #expect(await proxy.logs.wait { $0.contains { $0.contains("end=early_data_limit") } })
        await proxy.stop()
    }

    @Test(.timing) func quietSessionIsClosedAfterTheIdleTimeout() async throws {
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start { $0.timeouts.idle = .milliseconds(400) }
        let (closed, elapsed) = try await onThread {
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            let reply = try socket.socksConnect(to: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port)))
            guard reply.code == .succeeded else { return (false, TimeAmount.zero) }
            // Traffic keeps it open past one timeout...
            for _ in 0..<6 {
                usleep(100_000)
                try socket.send([1])
                _ = try socket.receive(exactly: 1)
            }
            // ...silence ends it.
            let start = NIODeadline.now()
            return (socket.waitForClose(), NIODeadline.now() - start)
        }
        #expect(closed)
        #expect(elapsed >= .milliseconds(350))
        #expect(elapsed < .seconds(2))
        #expect(await proxy.logs.wait { $0.contains { $0.contains("up=6 down=6") && $0.contains("end=idle_timeout") } })
        await proxy.stop()
        await echo.stop()
    }

    @Test func twoHundredConcurrentSessionsAllComplete() async throws {
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start()
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<200 {
                group.addTask {
                    let payload = patternBytes(count: 4096, seed: UInt64(index + 1))
                    let (reply, echoed) = try await echoThroughProxy(
                        proxyPort: proxy.port, destination: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port)),
                        payload: payload)
                    return reply.code == .succeeded && echoed == payload
                }
            }
            var results: [Bool] = []
            for try await result in group { results.append(result) }
            return results
        }
        #expect(results.count == 200)
        #expect(results.allSatisfy { $0 })
        #expect(await proxy.logs.wait { $0.filter { $0.contains(" msg=session ") }.count == 200 })
        await proxy.stop()
        await echo.stop()
    }
}

/// Says "hello" and closes its sending side at once, then reads whatever comes until EOF.
final class GreetThenHalfClose: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: one instance per channel, used on its event loop; `received` is locked.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let received: NIOLockedValueBox<[UInt8]>

    init(received: NIOLockedValueBox<[UInt8]>) { self.received = received }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "hello")), promise: nil)
        context.close(mode: .output, promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Array(unwrapInboundIn(data).readableBytesView)
        received.withLockedValue { $0.append(contentsOf: bytes) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            context.close(promise: nil)
        }
    }
}
