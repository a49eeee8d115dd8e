import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Testing

extension TestSocket {
    /// Greeting with method none, then BIND expecting `peer`; returns the first reply.
    func socksBind(expecting peer: SOCKSEndpoint) throws -> SOCKSReply {
        try send(Self.negotiation(.bind, to: peer))
        try expectBytesHelper(try receive(exactly: 2), [5, 0])
        return try readReply()
    }

    /// The local port of this socket.
    var localPort: Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return withUnsafeBytes(of: &storage) { bytes in Int(UInt16(bytes[2]) << 8 | UInt16(bytes[3])) }
    }
}

func loopback(_ last: UInt8, _ port: Int = 0) -> SOCKSEndpoint {
    SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, last)), port: UInt16(port))
}

/// BIND (RFC 1928 section 4) through the real binary over real sockets: two replies, the relay,
/// the expected peer, the bounds, the rules.
@Suite(.system, .timeLimit(.minutes(3))) struct BindTests {
    /// Loopback open to CONNECT and to BIND peers.
    static let bindRules = """
        rules:
          - name: test-loopback
            action: allow
            to: [127.0.0.0/8, "::1/128"]
          - name: bind-loopback
            action: allow
            to: [127.0.0.0/8, "::1/128"]
            commands: [bind]

        """

    static func start(_ extra: String = "") async throws -> ServerProcess {
        try await ServerProcess.start("listen: [127.0.0.1:0]\n" + extra + "\n" + bindRules)
    }

    static func sessionLines(_ server: ServerProcess) -> [[String: String]] {
        server.process.stderr.split(separator: "\n").filter { $0.contains("msg=session") }.map { logfmtFields(String($0)) }
    }

    @Test func aBindWhosePeerConnectsGetsTwoRepliesThenRelaysBothWaysThroughAHalfClose() async throws {
        let server = try await Self.start("admin: {listen: 127.0.0.1:0}")
        defer { server.process.signal(SIGKILL) }
        let admin = try await adminPort(of: server)
        let (hello, world, after) = (Array("hello peer".utf8), Array("hello client".utf8), Array("after the half-close".utf8))
        let (first, second, peerPort, atPeer, peerEOF, atClient) = try await onThread {
            () throws -> (SOCKSReply, SOCKSReply, Int, [UInt8], [UInt8], [UInt8]) in
            let client = try TestSocket(host: "127.0.0.1", port: server.port)
            let first = try client.socksBind(expecting: loopback(1))
            let peer = try TestSocket(host: "127.0.0.1", port: Int(first.bound.port))
            let second = try client.readReply()
            try client.send(hello)
            let atPeer = try peer.receive(exactly: hello.count)
            try peer.send(world)
            var atClient = try client.receive(exactly: world.count)
            // The client ends its side; the peer sees EOF and still answers.
            client.shutdownWrite()
            let peerEOF = try peer.receiveUntilEOF()
            try peer.send(after)
            peer.shutdownWrite()
            atClient += try client.receiveUntilEOF()
            return (first, second, peer.localPort, atPeer, peerEOF, atClient)
        }
        #expect(first.code == .succeeded && first.bound.host == loopback(1).host && first.bound.port != 0)
        #expect(second.code == .succeeded && second.bound == loopback(1, peerPort), "the second reply names the peer")
        #expect(atPeer == hello && peerEOF.isEmpty && atClient == world + after)
        #expect(await server.process.waitForStderr(containing: "msg=session"))
        let line = try #require(Self.sessionLines(server).first)
        #expect(line["cmd"] == "bind" && line["remote"] == "127.0.0.1:\(peerPort)" && line["rule"] == "bind-loopback", "\(line)")
        #expect(line["end"] == "client_closed" && line["up"] == "\(hello.count)" && line["down"] == "\(world.count + after.count)", "\(line)")
        let samples = prometheusSamples(try await onThread { try httpRequest(port: admin, "/metrics").body })
        #expect(samples["sallyport_sessions_total{command=\"bind\",end=\"client_closed\"}"] == 1, "\(samples)")
    }

    @Test func aPeerFromAnotherAddressIsRefusedWhileTheExpectedOneStillGetsThrough() async throws {
        let server = try await Self.start()
        defer { server.process.signal(SIGKILL) }
        let (first, strangersClosed, second, echoed) = try await onThread { () throws -> (SOCKSReply, [Bool], SOCKSReply, [UInt8]) in
            let client = try TestSocket(host: "127.0.0.1", port: server.port)
            let first = try client.socksBind(expecting: loopback(2, 4000))
            // Two strangers: each is closed, and the BIND goes on waiting.
            var closed: [Bool] = []
            for stranger in ["127.0.0.3", "127.0.0.4"] {
                let socket = try TestSocket(host: "127.0.0.1", port: Int(first.bound.port), from: stranger)
                closed.append(socket.waitForClose())
            }
            // The expected address, from any port.
            let peer = try TestSocket(host: "127.0.0.1", port: Int(first.bound.port), from: "127.0.0.2")
            let second = try client.readReply()
            try peer.send([1, 2, 3])
            return (first, closed, second, try client.receive(exactly: 3))
        }
        #expect(first.code == .succeeded)
        #expect(strangersClosed == [true, true])
        #expect(second.code == .succeeded && second.bound.host == loopback(2).host)
        #expect(echoed == [1, 2, 3])
        // The first stranger is logged, once.
        let refusals = server.process.stderr.split(separator: "\n").filter { $0.contains("BIND peer refused") }
        #expect(refusals.count == 1 && refusals[0].contains("peer=127.0.0.3:"), "\(refusals)")
    }

    @Test func strangersByTheHundredAreClosedAndLeaveNoDescriptorBehind() async throws {
        let server = try await Self.start()
        defer { server.process.signal(SIGKILL) }
        let before = openDescriptors(server.pid)
        let strangers = 300
        let (closed, second) = try await onThread { () throws -> (Int, SOCKSReply) in
            let client = try TestSocket(host: "127.0.0.1", port: server.port)
            let first = try client.socksBind(expecting: loopback(2))
            var closed = 0
            for _ in 0..<strangers {
                let socket = try TestSocket(host: "127.0.0.1", port: Int(first.bound.port), from: "127.0.0.3")
                if socket.waitForClose() { closed += 1 }
            }
            let peer = try TestSocket(host: "127.0.0.1", port: Int(first.bound.port), from: "127.0.0.2")
            let second = try client.readReply()
            peer.shutdownWrite()
            client.shutdownWrite()
            _ = try client.receiveUntilEOF()
            return (closed, second)
        }
        #expect(closed == strangers)
        #expect(second.code == .succeeded && second.bound.host == loopback(2).host)
        #expect(await server.process.waitForStderr(containing: "msg=session"))
        let after = openDescriptors(server.pid)
        #expect(before != nil && after != nil)
        #expect((after ?? 99) - (before ?? 0) < 5, "descriptors went from \(before ?? -1) to \(after ?? -1)")
        #expect(server.process.stderr.split(separator: "\n").filter { $0.contains("BIND peer refused") }.count == 1)
    }

    @Test func bindsRefusedForABusyPortRangeGetReply01AndKeepNoDescriptor() async throws {
        // The range's one port is held by a listening socket of the test's.
        let taken = try RefusingPort(listenBacklog: 4)
        let server = try await Self.start("bind: {port_range: \(taken.port)-\(taken.port)}")
        defer { server.process.signal(SIGKILL) }
        let attempts = 40
        let before = openDescriptors(server.pid)
        let codes = try await onThread {
            try (0..<attempts).map { _ in try TestSocket(host: "127.0.0.1", port: server.port).socksBind(expecting: loopback(1)).code }
        }
        #expect(codes.allSatisfy { $0 == .generalFailure }, "\(codes)")
        #expect(await server.process.waitForStderr(containing: "msg=session", count: attempts))
        #expect(server.process.stderr.contains("cannot open a BIND listening socket"))
        let after = openDescriptors(server.pid)
        #expect((after ?? 99) - (before ?? 0) < 5, "descriptors went from \(before ?? -1) to \(after ?? -1)")
        _ = taken
    }

    @Test func aBindExpectingANameTakesThePeerAtItsAddresses() async throws {
        let server = try await Self.start()
        defer { server.process.signal(SIGKILL) }
        let (first, stranger, second) = try await onThread { () throws -> (SOCKSReply, Bool, SOCKSReply) in
            let client = try TestSocket(host: "127.0.0.1", port: server.port)
            let first = try client.socksBind(expecting: SOCKSEndpoint(host: .domain("localhost"), port: 21))
            let stranger = try TestSocket(host: "127.0.0.1", port: Int(first.bound.port), from: "127.0.0.5").waitForClose()
            let peer = try TestSocket(host: "127.0.0.1", port: Int(first.bound.port), from: "127.0.0.1")
            _ = peer
            return (first, stranger, try client.readReply())
        }
        #expect(first.code == .succeeded)
        #expect(stranger, "an address the name does not have was let in")
        #expect(second.code == .succeeded && second.bound.host == loopback(1).host)
    }

    @Test func aBindOverIPv6ListensOnTheIPv6AddressTheClientReached() async throws {
        let server = try await ServerProcess.start("listen: [\"[::1]:0\"]\n" + Self.bindRules)
        defer { server.process.signal(SIGKILL) }
        let ipv6Loopback = SOCKSEndpoint(host: .ipv6(SOCKSIPv6Address(high: 0, low: 1)), port: 0)
        let (first, second, relayed) = try await onThread { () throws -> (SOCKSReply, SOCKSReply, [UInt8]) in
            let client = try TestSocket(host: "::1", port: server.port)
            let first = try client.socksBind(expecting: ipv6Loopback)
            let peer = try TestSocket(host: "::1", port: Int(first.bound.port))
            let second = try client.readReply()
            try client.send([7, 8, 9])
            return (first, second, try peer.receive(exactly: 3))
        }
        #expect(first.code == .succeeded && first.bound.host == ipv6Loopback.host)
        #expect(second.code == .succeeded && second.bound.host == ipv6Loopback.host)
        #expect(relayed == [7, 8, 9])
    }

    @Test func closingTheControlConnectionEndsTheBindAndItsListeningSocket() async throws {
        let server = try await Self.start()
        defer { server.process.signal(SIGKILL) }
        let first = try await onThread { () throws -> SOCKSReply in
            let client = try TestSocket(host: "127.0.0.1", port: server.port)
            return try client.socksBind(expecting: loopback(1))
        }
        // The client socket is gone with the closure above.
        #expect(await server.process.waitForStderr(containing: "msg=session"))
        let line = try #require(Self.sessionLines(server).first)
        #expect(line["cmd"] == "bind" && line["end"] == "client_closed", "\(line)")
        let refused = try await onThread { () -> Bool in
            (try? TestSocket(host: "127.0.0.1", port: Int(first.bound.port))) == nil
        }
        #expect(refused, "the listening socket outlived its BIND")
    }

    @Test(.timing) func aPeerThatNeverComesGetsReply06AtTheBindTimeout() async throws {
        let server = try await Self.start("timeouts: {bind: 1s}")
        defer { server.process.signal(SIGKILL) }
        let (first, second, elapsed) = try await onThread { () throws -> (SOCKSReply, SOCKSReply, Double) in
            let client = try TestSocket(host: "127.0.0.1", port: server.port)
            let first = try client.socksBind(expecting: loopback(1))
            let start = Date()
            let second = try client.readReply()
            return (first, second, Date().timeIntervalSince(start))
        }
        #expect(first.code == .succeeded)
        #expect(second.code == .ttlExpired)
        // timeouts.bind is 1 s: not before it, and not long after.
        #expect(elapsed >= 0.9 && elapsed < 5, "answered after \(elapsed) s")
        #expect(await server.process.waitForStderr(containing: "msg=session"))
        let line = try #require(Self.sessionLines(server).first)
        #expect(line["cmd"] == "bind" && line["end"] == "request_failed" && line["reply"] == "6", "\(line)")
        let refused = try await onThread { (try? TestSocket(host: "127.0.0.1", port: Int(first.bound.port))) == nil }
        #expect(refused, "the listening socket outlived its BIND")
    }

    @Test func aBindWithoutARuleNamingItGetsReply02() async throws {
        let server = try await ServerProcess.start("listen: [127.0.0.1:0]\ndefault_action: allow\n" + loopbackRules)
        defer { server.process.signal(SIGKILL) }
        let reply = try await onThread { try TestSocket(host: "127.0.0.1", port: server.port).socksBind(expecting: loopback(1)) }
        #expect(reply.code == .notAllowed)
        #expect(await server.process.waitForStderr(containing: "msg=session"))
        let line = try #require(Self.sessionLines(server).first)
        #expect(line["cmd"] == "bind" && line["end"] == "denied" && line["reply"] == "2", "\(line)")
    }

    @Test func checkConfigSaysWhoMayBind() async throws {
        let none = try temporaryFile("listen: [127.0.0.1:0]\n" + loopbackRules, suffix: ".yaml")
        let some = try temporaryFile("listen: [127.0.0.1:0]\n" + Self.bindRules, suffix: ".yaml")
        let noDefault = try temporaryFile("listen: [127.0.0.1:0]\n", suffix: ".yaml")
        for (path, expected) in [
            (none, "BIND refused to everyone (reply 0x02): no allow rule has commands: [bind]"),
            (some, "BIND allowed by bind-loopback"),
            (noDefault, "BIND refused to everyone"),
        ] {
            let result = try await runProcess(sallyportExecutable(), ["check-config", path])
            #expect(result.status == 0 && result.stdout.contains(expected), "\(result.stdout) \(result.stderr)")
        }
        // bind is a command the rules know; a misspelt one is named with what is expected.
        let bad = try temporaryFile("rules: [{action: allow, commands: [bnid]}]\n", suffix: ".yaml")
        let result = try await runProcess(sallyportExecutable(), ["check-config", bad])
        #expect(result.status == 1 && result.stderr.contains("unknown command 'bnid'; expected connect, udp or bind"), "\(result.stderr)")
    }

    @Test func aBindForAPeerNoRuleAllowsGetsReply02() async throws {
        let server = try await Self.start()
        defer { server.process.signal(SIGKILL) }
        // The rule names 127.0.0.0/8 only; 192.0.2.1 stays refused (and is special besides).
        let reply = try await onThread {
            try TestSocket(host: "127.0.0.1", port: server.port).socksBind(expecting: SOCKSEndpoint(host: .ipv4(.init(192, 0, 2, 1)), port: 21))
        }
        #expect(reply.code == .notAllowed)
    }

    @Test func aWaitingBindCountsAsASessionForTheLimits() async throws {
        let server = try await Self.start("limits: {max_sessions: 1}")
        defer { server.process.signal(SIGKILL) }
        let (first, second) = try await onThread { () throws -> (SOCKSReply, SOCKSReply) in
            let client = try TestSocket(host: "127.0.0.1", port: server.port)
            let first = try client.socksBind(expecting: loopback(1))
            let other = try TestSocket(host: "127.0.0.1", port: server.port)
            return (first, try other.socksBind(expecting: loopback(1)))
        }
        #expect(first.code == .succeeded)
        #expect(second.code == .generalFailure, "the server-wide cap answers 0x01")
        #expect(await server.process.waitForStderr(containing: "end=limit_server"), "\(server.process.stderr)")
    }

    @Test func socks4BindGetsTwo0x5ARepliesAndRelays() async throws {
        let server = try await ServerProcess.start(
            "listen: [{address: 127.0.0.1:0, socks4: true}]\n" + Self.bindRules)
        defer { server.process.signal(SIGKILL) }
        let (first, second, peerPort, relayed) = try await onThread { () throws -> ([UInt8], [UInt8], Int, [UInt8]) in
            let client = try TestSocket(host: "127.0.0.1", port: server.port)
            try client.send([4, 2, 0, 0, 127, 0, 0, 1] + Array("dave".utf8) + [0])
            let first = try client.receive(exactly: 8)
            let port = Int(first[2]) << 8 | Int(first[3])
            let peer = try TestSocket(host: "127.0.0.1", port: port)
            let second = try client.receive(exactly: 8)
            try peer.send(Array("via socks4".utf8))
            return (first, second, peer.localPort, try client.receive(exactly: 10))
        }
        #expect(first[0] == 0 && first[1] == 0x5A && Array(first[4...]) == [127, 0, 0, 1])
        #expect(second == [0, 0x5A, UInt8(peerPort >> 8), UInt8(peerPort & 0xFF), 127, 0, 0, 1])
        #expect(relayed == Array("via socks4".utf8))
    }
}
