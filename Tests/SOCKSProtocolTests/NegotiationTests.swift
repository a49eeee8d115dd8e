import NIOCore
import Testing

@testable import SOCKSProtocol

/// Drives a `ServerNegotiation` the way the server's handler does and records what it did.
struct NegotiationDriver {
    enum Step: Equatable {
        case sent([UInt8])
        case closed(ServerNegotiation.Failure)
        case replied(SOCKSReplyCode)
        case authenticate(String)
        case execute(SOCKSRequest)
        case established
    }

    var machine: ServerNegotiation
    var buffer = ByteBuffer()
    var steps: [Step] = []
    /// The answer given to `.authenticate`.
    var authenticationSucceeds = true
    /// The answer given to `.execute`: a bound address, or a failure code. For a BIND, a bound
    /// address is where it listens (the first reply); `peer(_:)` gives the second.
    var executeResult: ExecuteResult? = .success(SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: 4242))

    enum ExecuteResult {
        case success(SOCKSEndpoint)
        case failure(SOCKSReplyCode)
    }

    init(methods: [AuthenticationMethod] = [.none], commands: Set<SOCKSCommand> = [.connect], maximumEarlyData: Int = 1024, socks4: Bool = false) {
        machine = ServerNegotiation(configuration: .init(methods: methods, commands: commands, maximumEarlyData: maximumEarlyData, socks4: socks4))
    }

    var sentBytes: [UInt8] { steps.flatMap { if case .sent(let bytes) = $0 { return bytes } else { return [] } } }
    var isClosed: Bool { steps.contains { if case .closed = $0 { return true } else { return false } } }
    var closeReason: ServerNegotiation.Failure? {
        for step in steps { if case .closed(let reason) = step { return reason } }
        return nil
    }

    /// A BIND's peer connected (`.success`, its address) or did not (`.failure`).
    mutating func peer(_ result: ExecuteResult) {
        switch result {
        case .success(let peer): _ = perform(machine.requestSucceeded(bound: peer))
        case .failure(let code): _ = perform(machine.requestFailed(code))
        }
        run()
    }

    mutating func feed(_ bytes: [UInt8]) {
        buffer.writeBytes(bytes)
        run()
    }

    mutating func run() {
        while !isClosed {
            let action = machine.process(&buffer)
            if !perform(action) { return }
        }
    }

    /// Returns whether to go on processing.
    mutating func perform(_ action: ServerNegotiation.Action) -> Bool {
        switch action {
        case .needMoreData, .wait:
            return false
        case .send(let bytes):
            steps.append(.sent(Array(bytes.readableBytesView)))
            return true
        case .sendAndClose(let bytes, let failure, let reply):
            steps.append(.sent(Array(bytes.readableBytesView)))
            // The reply code the action names is the one its bytes carry.
            if let reply { steps.append(.replied(reply)) }
            steps.append(.closed(failure))
            return false
        case .close(let failure):
            steps.append(.closed(failure))
            return false
        case .authenticate(let request):
            steps.append(.authenticate(request.username))
            return perform(machine.authenticationCompleted(success: authenticationSucceeds))
        case .execute(let request):
            steps.append(.execute(request))
            switch executeResult {
            case .success(let bound) where request.command == .bind: return perform(machine.listening(bound: bound))
            case .success(let bound): return perform(machine.requestSucceeded(bound: bound))
            case .failure(let code): return perform(machine.requestFailed(code))
            case nil: return false
            }
        case .established(let reply):
            steps.append(.sent(Array(reply.readableBytesView)))
            steps.append(.established)
            return false
        }
    }
}

let connectRequest: [UInt8] = [5, 1, 0, 3, 11] + Array("example.com".utf8) + [1, 187]
let successReply: [UInt8] = [5, 0, 0, 1, 127, 0, 0, 1, 0x10, 0x92]
let credentials: [UInt8] = [1, 5] + Array("alice".utf8) + [6] + Array("s3cret".utf8)

@Suite(.timeLimit(.minutes(1))) struct NegotiationTests {
    /// The full exchange for method none, fed in every way a network can deliver it.
    @Test(arguments: [1, 2, 3, 7, 1000])
    func noneNegotiationWithPayloadInAnyChunking(chunk: Int) {
        let payload = Array("GET / HTTP/1.1\r\n\r\n".utf8)
        let bytes: [UInt8] = [5, 1, 0] + connectRequest + payload
        var driver = NegotiationDriver()
        var index = 0
        while index < bytes.count {
            driver.feed(Array(bytes[index..<min(index + chunk, bytes.count)]))
            index += chunk
        }
        #expect(driver.sentBytes == [5, 0] + successReply)
        #expect(driver.steps.last == .established)
        #expect(Array(driver.buffer.readableBytesView) == payload)
    }

    @Test(arguments: [1, 4, 1000])
    func usernameNegotiationCoalescedOrSplit(chunk: Int) {
        let bytes: [UInt8] = [5, 2, 0, 2] + credentials + connectRequest + [0xAA, 0xBB]
        var driver = NegotiationDriver(methods: [.usernamePassword])
        var index = 0
        while index < bytes.count {
            driver.feed(Array(bytes[index..<min(index + chunk, bytes.count)]))
            index += chunk
        }
        #expect(driver.steps.contains(.authenticate("alice")))
        #expect(driver.sentBytes == [5, 2, 1, 0] + successReply)
        #expect(Array(driver.buffer.readableBytesView) == [0xAA, 0xBB])
    }

    @Test(arguments: [
        ([UInt8]([5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80]), SOCKSReplyCode.commandNotSupported),
        ([5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80], .addressTypeNotSupported),
        ([5, 1, 0, 5, 1, 0, 3, 0, 0, 80], .generalFailure),
    ])
    func failureActionsNameTheReplyCodeTheirBytesCarry(bytes: [UInt8], code: SOCKSReplyCode) {
        var driver = NegotiationDriver()
        driver.feed(bytes)
        #expect(driver.steps.contains(.replied(code)))
        #expect(driver.sentBytes.suffix(10).first == 5 && Array(driver.sentBytes.suffix(10))[1] == code.rawValue)
    }

    @Test func aRefusedRequestNamesTheCodeItWasGiven() {
        var driver = NegotiationDriver()
        driver.executeResult = .failure(.notAllowed)
        driver.feed([5, 1, 0, 5, 1, 0, 1, 1, 2, 3, 4, 0, 80])
        #expect(driver.steps.contains(.replied(.notAllowed)))
    }

    @Test func serverPreferenceOrderDecides() {
        var driver = NegotiationDriver(methods: [.usernamePassword, .none])
        driver.feed([5, 2, 0, 2])
        #expect(driver.sentBytes == [5, 2])
    }

    @Test func onlyAnOfferedMethodIsChosen() {
        var driver = NegotiationDriver(methods: [.usernamePassword])
        driver.feed([5, 1, 0])
        #expect(driver.sentBytes == [5, 0xFF])
        #expect(driver.closeReason == .noAcceptableMethod)
    }

    @Test func emptyMethodListGetsNoAcceptableMethods() {
        var driver = NegotiationDriver()
        driver.feed([5, 0])
        #expect(driver.sentBytes == [5, 0xFF])
        #expect(driver.isClosed)
    }

    @Test func badVersionClosesWithoutReply() {
        var driver = NegotiationDriver()
        driver.feed([6, 1, 0])
        #expect(driver.sentBytes == [])
        #expect(driver.closeReason == .protocolError(.invalidVersion(6)))
        // SOCKS4 where it is not served: no reply either.
        var socks4 = NegotiationDriver()
        socks4.feed([4, 1, 0, 80, 1, 2, 3, 4, 0])
        #expect(socks4.sentBytes == [])
        #expect(socks4.closeReason == .protocolError(.socks4NotEnabled))
    }

    @Test func badVersionInRequestCloses() {
        var driver = NegotiationDriver()
        driver.feed([5, 1, 0, 4, 1, 0, 1, 1, 2, 3, 4, 0, 80])
        #expect(driver.sentBytes == [5, 0])
        #expect(driver.closeReason == .protocolError(.invalidVersion(4)))
    }

    @Test func wrongPasswordGetsFailureStatusAndClose() {
        var driver = NegotiationDriver(methods: [.usernamePassword])
        driver.authenticationSucceeds = false
        driver.feed([5, 1, 2] + credentials + connectRequest)
        #expect(driver.sentBytes == [5, 2, 1, 1])
        #expect(driver.closeReason == .authenticationFailed)
        #expect(!driver.steps.contains { if case .execute = $0 { return true } else { return false } })
    }

    @Test(arguments: [
        [1, 0, 1, 0x61] as [UInt8],
        [1, 1, 0x61, 0] as [UInt8],
    ])
    func emptyUsernameOrPasswordGetsFailureStatus(auth: [UInt8]) {
        var driver = NegotiationDriver(methods: [.usernamePassword])
        driver.feed([5, 1, 2] + auth)
        #expect(driver.sentBytes == [5, 2, 1, 1])
        #expect(driver.isClosed)
        #expect(!driver.steps.contains(.authenticate("a")))
    }

    @Test func badAuthenticationVersionCloses() {
        var driver = NegotiationDriver(methods: [.usernamePassword])
        driver.feed([5, 1, 2, 5, 1, 0x61, 1, 0x62])
        #expect(driver.sentBytes == [5, 2])
        #expect(driver.closeReason == .protocolError(.invalidAuthenticationVersion(5)))
    }

    @Test(arguments: [SOCKSCommand.bind, .udpAssociate, SOCKSCommand(rawValue: 0), SOCKSCommand(rawValue: 9)])
    func unservedCommandsGetReply07(command: SOCKSCommand) {
        var driver = NegotiationDriver()
        driver.feed([5, 1, 0, 5, command.rawValue, 0, 1, 1, 2, 3, 4, 0, 80])
        #expect(driver.sentBytes == [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(driver.closeReason == .commandNotSupported(command))
    }

    @Test func unknownAddressTypeGetsReply08() {
        var driver = NegotiationDriver()
        driver.feed([5, 1, 0, 5, 1, 0, 7, 1, 2, 3, 4, 0, 80])
        #expect(driver.sentBytes == [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(driver.isClosed)
    }

    @Test(arguments: [
        [5, 1, 0, 3, 0, 0, 80] as [UInt8],
        [5, 1, 0, 3, 4, 0x61, 0x62, 0, 0x63, 0, 80] as [UInt8],
    ])
    func emptyOrNULDomainIsRefused(request: [UInt8]) {
        var driver = NegotiationDriver()
        driver.feed([5, 1, 0] + request)
        #expect(driver.sentBytes == [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(driver.closeReason == .protocolError(.invalidDomainName))
    }

    @Test func connectFailureCodeIsReplied() {
        var driver = NegotiationDriver()
        driver.executeResult = .failure(.connectionRefused)
        driver.feed([5, 1, 0] + connectRequest)
        #expect(driver.sentBytes == [5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(driver.closeReason == .requestFailed(.connectionRefused))
    }

    @Test func earlyDataIsKeptUpToTheLimitThenCloses() {
        var driver = NegotiationDriver(maximumEarlyData: 100)
        driver.executeResult = nil
        driver.feed([5, 1, 0] + connectRequest + [UInt8](repeating: 1, count: 100))
        #expect(!driver.isClosed)
        #expect(driver.buffer.readableBytes == 100)
        driver.feed([1])
        #expect(driver.closeReason == .earlyDataLimitExceeded)
    }

    @Test func earlyDataWhileAuthenticatingIsBounded() {
        var driver = NegotiationDriver(methods: [.usernamePassword], maximumEarlyData: 10)
        driver.buffer.writeBytes([5, 1, 2] + credentials)
        var sawAuthenticate = false
        while !sawAuthenticate {
            let action = driver.machine.process(&driver.buffer)
            if case .authenticate = action { sawAuthenticate = true } else { _ = driver.perform(action) }
        }
        driver.feed([UInt8](repeating: 0, count: 11))
        #expect(driver.closeReason == .earlyDataLimitExceeded)
    }

    @Test func eofBeforeTheRequestCloses() {
        var driver = NegotiationDriver()
        driver.feed([5, 1, 0, 5, 1])
        _ = driver.perform(driver.machine.inputClosed())
        #expect(driver.closeReason == .clientClosed)
    }

    @Test func eofAfterTheRequestLetsItFinish() {
        var driver = NegotiationDriver()
        driver.executeResult = nil
        driver.feed([5, 1, 0] + connectRequest + [7, 7])
        #expect(driver.perform(driver.machine.inputClosed()) == false)
        #expect(!driver.isClosed)
        _ = driver.perform(driver.machine.requestSucceeded(bound: .unspecified))
        #expect(driver.steps.last == .established)
    }

    @Test func everyPrefixOfAValidExchangeWaitsForMore() {
        let bytes: [UInt8] = [5, 2, 0, 2] + credentials + connectRequest
        for cut in 0..<bytes.count {
            var driver = NegotiationDriver(methods: [.usernamePassword])
            driver.executeResult = nil
            driver.feed(Array(bytes[..<cut]))
            #expect(!driver.isClosed, "closed after \(cut) bytes")
        }
    }
}
