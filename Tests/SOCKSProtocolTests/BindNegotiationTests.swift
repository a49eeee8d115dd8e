import NIOCore
import Testing

@testable import SOCKSProtocol

/// BIND (RFC 1928 section 4) in the negotiation machine: two replies, the first when the socket
/// listens and the second when the peer connects (or does not), then relaying.
@Suite(.timeLimit(.minutes(1))) struct BindNegotiationTests {
    /// BIND expecting 192.0.2.5:21.
    static let bindRequest: [UInt8] = [5, 2, 0, 1, 192, 0, 2, 5, 0, 21]
    /// The first reply: listening at 127.0.0.1:4242 (the driver's bound address).
    static let firstReply: [UInt8] = [5, 0, 0, 1, 127, 0, 0, 1, 0x10, 0x92]
    static let peer = SOCKSEndpoint(host: .ipv4(.init(192, 0, 2, 5)), port: 20)
    static let secondReply: [UInt8] = [5, 0, 0, 1, 192, 0, 2, 5, 0, 20]

    static func bindDriver(maximumEarlyData: Int = 1024) -> NegotiationDriver {
        NegotiationDriver(commands: [.connect, .bind], maximumEarlyData: maximumEarlyData)
    }

    @Test(arguments: [1, 3, 1000])
    func aBindGetsTheFirstReplyThenTheSecondWhenItsPeerConnects(chunk: Int) {
        var driver = Self.bindDriver()
        let bytes: [UInt8] = [5, 1, 0] + Self.bindRequest
        var index = 0
        while index < bytes.count {
            driver.feed(Array(bytes[index..<min(index + chunk, bytes.count)]))
            index += chunk
        }
        let request = SOCKSRequest(command: .bind, destination: SOCKSEndpoint(host: .ipv4(.init(192, 0, 2, 5)), port: 21))
        #expect(driver.steps.contains(.execute(request)))
        #expect(driver.sentBytes == [5, 0] + Self.firstReply)
        #expect(driver.steps.last != .established)
        #expect(!driver.machine.isFinished)
        driver.peer(.success(Self.peer))
        #expect(driver.sentBytes == [5, 0] + Self.firstReply + Self.secondReply)
        #expect(driver.steps.last == .established)
    }

    @Test func whatTheClientSendsWhileItWaitsIsPayloadForThePeer() {
        var driver = Self.bindDriver()
        driver.feed([5, 1, 0] + Self.bindRequest)
        driver.feed(Array("USER anonymous\r\n".utf8))
        driver.peer(.success(Self.peer))
        #expect(driver.steps.last == .established)
        #expect(Array(driver.buffer.readableBytesView) == Array("USER anonymous\r\n".utf8))
    }

    @Test func moreThanTheEarlyDataLimitWhileWaitingCloses() {
        var driver = Self.bindDriver(maximumEarlyData: 8)
        driver.feed([5, 1, 0] + Self.bindRequest)
        driver.feed([UInt8](repeating: 0x61, count: 9))
        #expect(driver.closeReason == .earlyDataLimitExceeded)
        #expect(driver.machine.requestSucceeded(bound: Self.peer).isWait)
    }

    @Test func aPeerThatNeverComesGetsReply06AfterTheFirstReply() {
        var driver = Self.bindDriver()
        driver.feed([5, 1, 0] + Self.bindRequest)
        driver.peer(.failure(.ttlExpired))
        #expect(driver.sentBytes == [5, 0] + Self.firstReply + [5, 6, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(driver.closeReason == .requestFailed(.ttlExpired))
    }

    @Test func aRefusedBindGetsOneReplyOnly() {
        var driver = Self.bindDriver()
        driver.executeResult = .failure(.notAllowed)
        driver.feed([5, 1, 0] + Self.bindRequest)
        #expect(driver.sentBytes == [5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(driver.closeReason == .requestFailed(.notAllowed))
    }

    @Test func theClientClosingWhileItWaitsEndsTheBind() {
        var driver = Self.bindDriver()
        driver.feed([5, 1, 0] + Self.bindRequest)
        guard case .close(let failure) = driver.machine.inputClosed() else {
            Issue.record("EOF while a BIND waits did not close it")
            return
        }
        #expect(failure == .clientClosed)
        #expect(driver.machine.requestSucceeded(bound: Self.peer).isWait)
    }

    @Test func repliesComeInOrderOnly() {
        // A second reply before the first is not sent; a CONNECT has no "listening" reply.
        var bind = Self.bindDriver()
        bind.executeResult = nil
        bind.feed([5, 1, 0] + Self.bindRequest)
        #expect(bind.machine.requestSucceeded(bound: Self.peer).isWait)
        var connect = NegotiationDriver(commands: [.connect, .bind])
        connect.executeResult = nil
        connect.feed([5, 1, 0] + connectRequest)
        #expect(connect.machine.listening(bound: Self.peer).isWait)
    }

    @Test func socks4BindGetsTwo0x5ARepliesWhereServed() {
        var driver = NegotiationDriver(commands: [.connect, .bind], socks4: true)
        driver.feed([4, 2, 0, 21, 192, 0, 2, 5] + Array("bob".utf8) + [0])
        #expect(driver.steps.first == .execute(SOCKSRequest(command: .bind, destination: SOCKSEndpoint(host: .ipv4(.init(192, 0, 2, 5)), port: 21))))
        #expect(driver.sentBytes == [0, 0x5A, 0x10, 0x92, 127, 0, 0, 1])
        driver.peer(.success(Self.peer))
        #expect(driver.sentBytes == [0, 0x5A, 0x10, 0x92, 127, 0, 0, 1, 0, 0x5A, 0, 20, 192, 0, 2, 5])
        #expect(driver.steps.last == .established)
    }
}

extension ServerNegotiation.Action {
    var isWait: Bool {
        if case .wait = self { return true }
        return false
    }
}
