import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Sallyport
import SallyportPolicy
@testable import SallyportRelay
import Testing

/// 127.0.0.1:port.
func loopback4(_ port: Int) -> SOCKSEndpoint { SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(port)) }

@Suite(.system, .timeLimit(.minutes(3))) struct UDPTests {
    @Test func associationRelaysToIPv4IPv6AndNameDestinations() async throws {
        let echo4 = try await UDPEchoServer.start()
        let echo6 = try await UDPEchoServer.start(host: "::1")
        let proxy = try await TestProxy.start()
        let results = try await onThread { () throws -> [(UDPDatagramHeader, [UInt8])?] in
            let (control, reply) = try udpAssociate(proxyPort: proxy.port)
            guard reply.code == .succeeded else { throw TestSocketError("reply \(reply.code)", errno: 0) }
            // The relay socket sits on the control connection's local IP.
            try expectBytesHelper(reply.bound.host == .ipv4(.init(127, 0, 0, 1)) ? [1] : [0], [1])
            let relay = try reply.bound.testAddress
            let client = try TestUDPSocket()
            var results: [(UDPDatagramHeader, [UInt8])?] = []
            for destination in [
                SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo4.port)),
                SOCKSEndpoint(host: .ipv6(.init(high: 0, low: 1)), port: UInt16(echo6.port)),
                SOCKSEndpoint(host: .domain("localhost"), port: UInt16(echo4.port)),
            ] {
                try client.send(TestUDPSocket.packet(to: destination, Array("hello \(destination)".utf8)), to: relay)
                results.append(try client.receive().map(TestUDPSocket.unpack))
            }
            _ = control
            return results
        }
        #expect(results.count == 3)
        #expect(results[0]?.0.endpoint == SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo4.port)))
        #expect(results[0]?.1 == Array("hello 127.0.0.1:\(echo4.port)".utf8))
        // Replies carry the address they came from.
        #expect(results[1]?.0.endpoint == SOCKSEndpoint(host: .ipv6(.init(high: 0, low: 1)), port: UInt16(echo6.port)))
        #expect(results[1]?.1 == Array("hello [::1]:\(echo6.port)".utf8))
        #expect(results[2]?.1 == Array("hello localhost:\(echo4.port)".utf8))
        await proxy.stop()
        await echo4.stop()
        await echo6.stop()
    }

    @Test func largestDatagramsAndMixedBurstsArriveIntact() async throws {
        let echo = try await UDPEchoServer.start()
        let proxy = try await TestProxy.start()
        let (largest, burst) = try await onThread { () throws -> ([UInt8]?, [[UInt8]]) in
            let (control, reply) = try udpAssociate(proxyPort: proxy.port)
            let relay = try reply.bound.testAddress
            let client = try TestUDPSocket()
            // 65,507 bytes is the most an IPv4 UDP datagram holds; the 10-byte SOCKS header (an
            // IPv4 destination) on both legs leaves 65,497 for the payload.
            let big = patternBytes(count: 65_497, seed: 7)
            try client.send(TestUDPSocket.packet(to: loopback4(echo.port), big), to: relay)
            let largest = try client.receive().map { try TestUDPSocket.unpack($0).1 }
            // A burst in one go, sizes from 1 byte to 60 KB, in the order sent.
            let sizes = [1, 60_000, 512, 32_768, 7, 1_400, 65_000, 3]
            for (index, size) in sizes.enumerated() {
                try client.send(TestUDPSocket.packet(to: loopback4(echo.port), patternBytes(count: size, seed: UInt64(index + 1))), to: relay)
            }
            var burst: [[UInt8]] = []
            for _ in sizes {
                guard let datagram = client.receive() else { break }
                burst.append(try TestUDPSocket.unpack(datagram).1)
            }
            _ = control
            return (largest, burst)
        }
        #expect(largest == patternBytes(count: 65_497, seed: 7))
        let sizes = [1, 60_000, 512, 32_768, 7, 1_400, 65_000, 3]
        #expect(burst.count == sizes.count)
        for (index, size) in sizes.enumerated() where index < burst.count {
            #expect(burst[index] == patternBytes(count: size, seed: UInt64(index + 1)), "datagram \(index) of \(size) bytes")
        }
        await proxy.stop()
        await echo.stop()
    }

    @Test func portRangeIsUsedAndAnExhaustedRangeGetsReply01() async throws {
        // A port that is free and stays free (no test binds it), and one that stays taken.
        let freePort = try TestUDPSocket.portOutsideTheEphemeralRange()
        let taken = try TestUDPSocket()
        let free = try await TestProxy.start { $0.udp.ports = freePort...freePort }
        let boundPort = try await onThread { () throws -> Int in
            let (control, reply) = try udpAssociate(proxyPort: free.port)
            _ = control
            return Int(reply.bound.port)
        }
        #expect(boundPort == freePort)
        await free.stop()

        let busy = try await TestProxy.start { $0.udp.ports = taken.port...taken.port }
        let code = try await onThread { try udpAssociate(proxyPort: busy.port).1.code }
        #expect(code == .generalFailure)
        #expect(await busy.logs.wait { $0.contains { $0.contains("cmd=udp") && $0.contains("reply=1") } })
        await busy.stop()
        _ = taken
    }

    @Test func bindCandidatesCoverSmallRangesAndBoundLargeOnes() {
        #expect(UDPAssociation.bindCandidates(nil) == [0])
        let small = UDPAssociation.bindCandidates(40_000...40_009)
        #expect(small.sorted() == Array(40_000...40_009))
        let large = UDPAssociation.bindCandidates(20_000...60_000)
        #expect(large.count == UDPAssociation.maxBindAttempts)
        #expect(large.allSatisfy { (20_000...60_000).contains($0) })
    }

    @Test func ipv6ControlConnectionGetsAnIPv6Relay() async throws {
        let echo = try await UDPEchoServer.start()
        let proxy = try await TestProxy.start { $0.listeners = [.init(host: "::1", port: 0)] }
        let answer = try await onThread { () throws -> [UInt8]? in
            let (control, reply) = try udpAssociate(proxyPort: proxy.port, proxyHost: "::1")
            guard reply.bound.host == .ipv6(.init(high: 0, low: 1)) else { throw TestSocketError("bound \(reply.bound)", errno: 0) }
            let client = try TestUDPSocket(host: "::1")
            try client.send(TestUDPSocket.packet(to: loopback4(echo.port), [42]), to: try reply.bound.testAddress)
            _ = control
            return try client.receive().map { try TestUDPSocket.unpack($0).1 }
        }
        #expect(answer == [42])
        await proxy.stop()
        await echo.stop()
    }

    @Test func datagramsFromOtherSourcesAreDroppedAndDoNotTakeOver() async throws {
        let echo = try await UDPEchoServer.start()
        let proxy = try await TestProxy.start()
        let (own, otherPort, otherHost, ownAfter) = try await onThread { () throws -> ([UInt8]?, [UInt8]?, [UInt8]?, [UInt8]?) in
            let (control, reply) = try udpAssociate(proxyPort: proxy.port)
            let relay = try reply.bound.testAddress
            let client = try TestUDPSocket()
            let packet = TestUDPSocket.packet(to: loopback4(echo.port), [1])
            // The first datagram fixes the client's port.
            try client.send(packet, to: relay)
            let own = client.receive()
            // Same IP, another port: dropped.
            let sameHostOtherPort = try TestUDPSocket(timeout: 0.5)
            try sameHostOtherPort.send(TestUDPSocket.packet(to: loopback4(echo.port), [2]), to: relay)
            let otherPort = sameHostOtherPort.receive()
            // Another IP: dropped.
            let otherHost = try TestUDPSocket(host: "127.0.0.2", timeout: 0.5)
            try otherHost.send(TestUDPSocket.packet(to: loopback4(echo.port), [3]), to: relay)
            let otherHostAnswer = otherHost.receive()
            // The client still owns the association.
            try client.send(TestUDPSocket.packet(to: loopback4(echo.port), [4]), to: relay)
            let ownAfter = client.receive()
            _ = control
            return (own, otherPort, otherHostAnswer, ownAfter)
        }
        #expect(try own.map { try TestUDPSocket.unpack($0).1 } == [1])
        #expect(otherPort == nil)
        #expect(otherHost == nil)
        #expect(try ownAfter.map { try TestUDPSocket.unpack($0).1 } == [4])
        await proxy.stop()
        #expect(await proxy.logs.wait { $0.contains { $0.contains("cmd=udp") && $0.contains("dropped=2") && $0.contains("dgrams_up=2 dgrams_down=2") } })
        await echo.stop()
    }

    @Test func namedSourcePortIsTheOnlyOneAccepted() async throws {
        let echo = try await UDPEchoServer.start()
        let proxy = try await TestProxy.start()
        let (first, second) = try await onThread { () throws -> ([UInt8]?, [UInt8]?) in
            let named = try TestUDPSocket(timeout: 0.5)
            let other = try TestUDPSocket(timeout: 0.5)
            let (control, reply) = try udpAssociate(proxyPort: proxy.port, expected: SOCKSEndpoint(host: .ipv4(.any), port: UInt16(named.port)))
            let relay = try reply.bound.testAddress
            // Another port of the client's host speaks first: it must not take the association.
            try other.send(TestUDPSocket.packet(to: loopback4(echo.port), [5]), to: relay)
            let first = other.receive()
            try named.send(TestUDPSocket.packet(to: loopback4(echo.port), [6]), to: relay)
            let second = named.receive(timeout: 5 * sanitizerSlowdown)
            _ = control
            return (first, second)
        }
        #expect(first == nil)
        #expect(try second.map { try TestUDPSocket.unpack($0).1 } == [6])
        await proxy.stop()
        await echo.stop()
    }

    @Test func fragmentsAndMalformedHeadersAreDroppedAndTheNextDatagramPasses() async throws {
        let echo = try await UDPEchoServer.start()
        let proxy = try await TestProxy.start()
        let answers = try await onThread { () throws -> [[UInt8]?] in
            let (control, reply) = try udpAssociate(proxyPort: proxy.port)
            let relay = try reply.bound.testAddress
            let client = try TestUDPSocket(timeout: 0.5)
            try client.send(TestUDPSocket.packet(to: loopback4(echo.port), fragment: 1, [7]), to: relay)
            let fragment = client.receive()
            try client.send([0, 0, 0, 9, 1, 2], to: relay)
            let malformed = client.receive()
            try client.send([0, 0], to: relay)
            let truncated = client.receive()
            try client.send(TestUDPSocket.packet(to: loopback4(echo.port), [8]), to: relay)
            let next = client.receive(timeout: 5 * sanitizerSlowdown)
            _ = control
            return [fragment, malformed, truncated, next]
        }
        #expect(answers[0] == nil && answers[1] == nil && answers[2] == nil)
        #expect(try answers[3].map { try TestUDPSocket.unpack($0).1 } == [8])
        await proxy.stop()
        await echo.stop()
    }

    @Test func closingTheControlConnectionEndsTheAssociationAtOnce() async throws {
        let echo = try await UDPEchoServer.start()
        let proxy = try await TestProxy.start()
        let client = try TestUDPSocket(timeout: 0.5)
        let (before, relay) = try await onThread { () throws -> ([UInt8]?, SocketAddress) in
            let (control, reply) = try udpAssociate(proxyPort: proxy.port)
            let relay = try reply.bound.testAddress
            try client.send(TestUDPSocket.packet(to: loopback4(echo.port), [9]), to: relay)
            let before = client.receive(timeout: 5 * sanitizerSlowdown)
            _ = control  // closed as it goes out of scope
            return (before, relay)
        }
        // Once the server has ended the association, a datagram to its old port gets nothing back.
        #expect(await proxy.logs.wait { $0.contains { $0.contains("cmd=udp") && $0.contains("end=control_closed") } })
        let after = try await onThread { () throws -> [UInt8]? in
            try? client.send(TestUDPSocket.packet(to: loopback4(echo.port), [10]), to: relay)
            return client.receive()
        }
        #expect(before != nil)
        #expect(after == nil)
        await proxy.stop()
        await echo.stop()
    }

    @Test func deniedDestinationGetsNothingAndIsLogged() async throws {
        let echo = try await UDPEchoServer.start()
        // Public destinations only: the loopback echo server is behind the guard.
        let proxy = try await TestProxy.start { $0.policy = .allowPublic }
        let answer = try await onThread { () throws -> [UInt8]? in
            let (control, reply) = try udpAssociate(proxyPort: proxy.port)
            let client = try TestUDPSocket(timeout: 0.5)
            try client.send(TestUDPSocket.packet(to: loopback4(echo.port), [11]), to: try reply.bound.testAddress)
            _ = control
            return client.receive()
        }
        #expect(answer == nil)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("msg=\"udp destinations refused\"") && $0.contains("rule=guard:127.0.0.0/8") && $0.contains("dst=127.0.0.1:\(echo.port)") } })
        await proxy.stop()
        await echo.stop()
    }

    @Test func udpIdleTimeoutEndsTheAssociationAndItsControlConnection() async throws {
        let proxy = try await TestProxy.start { $0.udp.idle = .milliseconds(300) }
        let closed = try await onThread { () throws -> Bool in
            let (control, _) = try udpAssociate(proxyPort: proxy.port)
            return control.waitForClose()
        }
        #expect(closed)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("cmd=udp") && $0.contains("end=idle_timeout") } })
        await proxy.stop()
    }

    @Test func udpCanBeTurnedOff() async throws {
        let proxy = try await TestProxy.start { $0.udp.enabled = false }
        let reply = try await onThread { try udpAssociate(proxyPort: proxy.port).1 }
        #expect(reply.code == .commandNotSupported)
        await proxy.stop()
    }

    @Test func advertisedAddressIsReplied() async throws {
        let proxy = try await TestProxy.start { $0.udp.advertise = "203.0.113.7" }
        let reply = try await onThread { try udpAssociate(proxyPort: proxy.port).1 }
        #expect(reply.code == .succeeded)
        #expect(reply.bound.host == .ipv4(.init(203, 0, 113, 7)))
        #expect(reply.bound.port != 0)
        await proxy.stop()
    }

    @Test(.timing) func tenThousandDatagramsEachWayArriveIntact() async throws {
        let echo = try await UDPEchoServer.start()
        let proxy = try await TestProxy.start()
        let (received, intact, seconds) = try await onThread { () throws -> (Int, Int, Double) in
            let (control, reply) = try udpAssociate(proxyPort: proxy.port)
            let relay = try reply.bound.testAddress
            let client = try TestUDPSocket(timeout: 2)
            let count = 10_000
            var received = 0
            var intact = 0
            let start = Date()
            // A bounded rate: windows of 50 datagrams in flight.
            var sent = 0
            while sent < count {
                let window = min(50, count - sent)
                for index in sent..<(sent + window) {
                    var data = patternBytes(count: 512, seed: UInt64(index + 1))
                    data[0] = UInt8(index & 0xFF)
                    data[1] = UInt8(index >> 8 & 0xFF)
                    try client.send(TestUDPSocket.packet(to: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port)), data), to: relay)
                }
                for _ in 0..<window {
                    guard let packet = client.receive() else { break }
                    received += 1
                    let (_, data) = try TestUDPSocket.unpack(packet)
                    let index = Int(data[0]) | Int(data[1]) << 8
                    var expected = patternBytes(count: 512, seed: UInt64(index + 1))
                    expected[0] = data[0]
                    expected[1] = data[1]
                    if data == expected { intact += 1 }
                }
                sent += window
            }
            _ = control
            return (received, intact, Date().timeIntervalSince(start))
        }
        print("udp: 10000 × 512 B each way: received \(received), intact \(intact), loss \(10_000 - received), \(Int(Double(received) / seconds)) round trips/s")
        #expect(received == 10_000)
        #expect(intact == received)
        await proxy.stop()
        await echo.stop()
    }
}
