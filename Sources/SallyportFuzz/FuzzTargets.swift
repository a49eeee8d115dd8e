import NIOCore
import SOCKSProtocol
import Sallyport
import SallyportAuth
import SallyportPolicy

/// The code the fuzzer drives, one function per target: each takes arbitrary bytes, must neither
/// crash nor hang, and checks a property of its own (a broken property is a crash, which libFuzzer
/// reports with the input). `make fuzz` runs them under libFuzzer; `make test` replays the seed
/// corpus and every crash found so far (`Tests/Fuzz/`).
public enum FuzzTargets {
    /// Every target by the name `make fuzz` and the corpus folders use.
    public static let all: [String: @Sendable ([UInt8]) -> Void] = [
        "negotiation": negotiation,
        "udp-header": udpHeader,
        "config": configuration,
        "policy": policy,
        "proxy-header": proxyHeader,
        "user-file": userFile,
        "upstream-handshake": upstreamHandshake,
        "certificate": certificate,
        "tls-handshake": tlsHandshake,
    ]

    /// The client side of a CONNECT through an upstream (SOCKS5 with or without a login, or HTTP
    /// CONNECT; the first byte chooses) fed the upstream's answer in pieces the second byte
    /// chooses: the same steps, the same failure and the same bytes left for the target as when
    /// fed whole.
    public static func upstreamHandshake(_ input: [UInt8]) {
        guard input.count >= 2 else { return }
        let options = input[0]
        let destination = options & 2 == 0
            ? SOCKSEndpoint(host: .domain("example.com"), port: 443) : SOCKSEndpoint(host: .ipv4(SOCKSIPv4Address(192, 0, 2, 1)), port: 80)
        let (user, password): (String?, String?) = options & 4 == 0 ? (nil, nil) : ("alice", "wonderland")
        let make: () -> any UpstreamHandshaking = {
            options & 1 == 0
                ? SOCKS5ClientHandshake(destination: destination, username: user, password: password)
                : HTTPConnectHandshake(destination: destination, username: user, password: password)!
        }
        if options & 8 != 0 { upstreamHead(name: input.dropFirst(2), user: user) }
        let answer = Array(input.dropFirst(2))
        let whole = drive(make(), pieces: [answer])
        let split = drive(make(), pieces: pieces(of: answer, seed: input[1]))
        precondition(whole == split, "split \(split) but whole \(whole)")
    }

    /// A name from the input, as a request would carry it: the parser takes it as an address or a
    /// DNS name or refuses it; what it takes, the HTTP upstream head carries as one token, in a
    /// head of exactly its three lines.
    private static func upstreamHead(name: ArraySlice<UInt8>, user: String?) {
        guard let host = DestinationName.host(fromWire: name.prefix(255)) else { return }
        let destination = SOCKSEndpoint(host: host, port: 443)
        guard let http = HTTPConnectHandshake(destination: destination, username: user, password: user.map { _ in "p\r\nX: 1" }) else {
            preconditionFailure("a parsed destination \(destination) was refused by the head")
        }
        let head = String(buffer: http.opening())
        let lines = head.components(separatedBy: "\r\n")
        precondition(lines.count == (user == nil ? 4 : 5) && lines.last == "" && lines[lines.count - 2] == "", "head \(head.debugDescription)")
        precondition(lines[0] == "CONNECT \(destination) HTTP/1.1" && !destination.description.contains(" "), "request line \(lines[0].debugDescription)")
        precondition(head.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F || $0 == 13 || $0 == 10 }, "head \(head.debugDescription)")
    }

    /// The steps a handshake takes over `pieces` (needing more data is no step), ending with
    /// the bytes left for the target once it is through.
    private static func drive(_ start: any UpstreamHandshaking, pieces: [[UInt8]]) -> [String] {
        var handshake = start
        var buffer = ByteBuffer()
        var steps: [String] = []
        var rest = pieces[...]
        while let piece = rest.popFirst() {
            buffer.writeBytes(piece)
            reading: while true {
                switch handshake.advance(&buffer) {
                case .send(let bytes): steps.append("send \(Array(bytes.readableBytesView))")
                case .needMoreData: break reading
                case .established:
                    for later in rest { buffer.writeBytes(later) }
                    return steps + ["established, then \(Array(buffer.readableBytesView))"]
                case .failed(let code, let reason): return steps + ["failed \(code): \(reason)"]
                }
            }
        }
        return steps
    }

    /// `data` cut in pieces of 1 to 7 bytes, sizes drawn from `seed`.
    static func pieces(of data: [UInt8], seed start: UInt8) -> [[UInt8]] {
        var pieces: [[UInt8]] = []
        var rest = data[...]
        var seed = UInt32(start) &+ 1
        while !rest.isEmpty {
            seed = seed &* 1_103_515_245 &+ 12_345
            let size = min(Int(seed >> 16) % 7 + 1, rest.count)
            pieces.append(Array(rest.prefix(size)))
            rest = rest.dropFirst(size)
        }
        return pieces
    }

    /// A user file as `sallyport passwd` edits it: whatever the bytes, the reader answers with
    /// accounts or bad lines; setting an account's own line again changes no account, and removing
    /// one leaves the others as they were.
    public static func userFile(_ input: [UInt8]) {
        let text = String(decoding: input, as: UTF8.self)
        guard case .success(let file) = UserFile.parse(text) else { return }
        for (name, account) in file.accounts.sorted(by: { $0.key < $1.key }).prefix(4) {
            precondition(UserFile.nameProblem(name) == nil && PasswordHash.problem(with: account.hash) == nil, "a bad account was read: \(name)")
            let again = UserFile.setting(user: name, hash: account.hash, groups: nil, in: text)
            guard case .success(let same) = UserFile.parse(again) else { preconditionFailure("setting \(name) again broke the file") }
            precondition(same.accounts == file.accounts, "setting \(name) again changed the accounts")
            guard let removed = UserFile.removing(user: name, from: text), case .success(let rest) = UserFile.parse(removed) else {
                preconditionFailure("removing \(name) failed")
            }
            var expected = file.accounts
            expected[name] = nil
            precondition(rest.accounts == expected, "removing \(name) changed other accounts")
        }
    }

    /// The negotiation machine fed the input in pieces whose sizes the input's first bytes choose:
    /// it must take the same actions as when fed the input whole (framing never changes meaning).
    public static func negotiation(_ input: [UInt8]) {
        guard input.count >= 2 else { return }
        let options = input[0]
        let methods: [AuthenticationMethod] = options & 1 == 0 ? [.none] : [.usernamePassword, .none]
        // The seed byte's top bit serves SOCKS4 too, the next serves BIND; the one after makes a
        // BIND's peer never come (its second reply is a failure).
        var commands: Set<SOCKSCommand> = options & 2 == 0 ? [.connect] : [.connect, .udpAssociate]
        if input[1] & 0x40 != 0 { commands.insert(.bind) }
        let configuration = ServerNegotiation.Configuration(
            methods: methods, commands: commands, maximumEarlyData: Int(options >> 2) * 16, socks4: input[1] & 0x80 != 0)
        let data = Array(input.dropFirst(2))
        let peerComes = input[1] & 0x20 == 0
        let whole = drive(configuration, pieces: [data], options: options, peerComes: peerComes)
        let split = drive(configuration, pieces: pieces(of: data, seed: input[1]), options: options, peerComes: peerComes)
        precondition(whole == split, "fed in pieces the machine did otherwise: \(whole) vs \(split)")
    }

    /// Runs the machine over the pieces; answers authentication and requests from `options`.
    static func drive(_ configuration: ServerNegotiation.Configuration, pieces: [[UInt8]], options: UInt8, peerComes: Bool) -> [String] {
        var machine = ServerNegotiation(configuration: configuration)
        var buffer = ByteBuffer()
        var log: [String] = []
        var done = false
        func perform(_ action: ServerNegotiation.Action) -> Bool {
            switch action {
            case .needMoreData, .wait:
                return false
            case .send(let bytes):
                log.append("send \(Array(bytes.readableBytesView))")
                return true
            case .sendAndClose(let bytes, let failure, let reply):
                if let reply {
                    // SOCKS4 has one code for every refusal.
                    let expected = machine.isSOCKS4 ? SOCKS4ReplyCode.rejected.rawValue : reply.rawValue
                    precondition(bytes.getInteger(at: 1, as: UInt8.self) == expected, "reply code differs from its bytes")
                }
                log.append("close \(failure) \(Array(bytes.readableBytesView))")
                done = true
                return false
            case .close(let failure):
                log.append("close \(failure)")
                done = true
                return false
            case .authenticate(let credentials):
                log.append("auth \(credentials.username)")
                return perform(machine.authenticationCompleted(success: options & 0x40 == 0))
            case .execute(let request):
                // A name the machine passes on is a DNS name in normalized form, whatever came in.
                if case .domain(let name) = request.destination.host {
                    precondition(DestinationName.isNormalized(name), "a request carries \(name.debugDescription)")
                }
                log.append("execute \(request)")
                precondition(configuration.commands.contains(request.command), "a command not served was executed")
                if request.command == .bind, options & 0x80 == 0 {
                    // The first reply says where the socket listens, with code success; the
                    // second names the peer, or fails.
                    guard case .send(let first) = machine.listening(bound: SOCKSEndpoint(host: .ipv4(SOCKSIPv4Address(0xC000_0201)), port: 4321)) else {
                        preconditionFailure("a BIND's first reply was not sent")
                    }
                    let granted = machine.isSOCKS4 ? SOCKS4ReplyCode.granted.rawValue : SOCKSReplyCode.succeeded.rawValue
                    precondition(first.getInteger(at: 1, as: UInt8.self) == granted, "a BIND's first reply is not a success")
                    log.append("listening \(Array(first.readableBytesView))")
                    if !peerComes { return perform(machine.requestFailed(.ttlExpired)) }
                    return perform(machine.requestSucceeded(bound: SOCKSEndpoint(host: .ipv4(SOCKSIPv4Address(0xC000_0202)), port: 20)))
                }
                if options & 0x80 == 0 {
                    return perform(machine.requestSucceeded(bound: .unspecified))
                }
                return perform(machine.requestFailed(.hostUnreachable))
            case .established:
                log.append("established")
                done = true
                return false
            }
        }
        for piece in pieces {
            buffer.writeBytes(piece)
            while !done, perform(machine.process(&buffer)) {}
        }
        // What is left once the machine is done is payload or junk, whichever way it came.
        if done { log.append("left \(buffer.readableBytes)") }
        return log
    }

    /// The UDP request header: what parses serialises back to the bytes it came from.
    public static func udpHeader(_ input: [UInt8]) {
        var buffer = ByteBuffer(bytes: input)
        guard let header = try? buffer.readUDPDatagramHeader() else { return }
        let consumed = input.count - buffer.readableBytes
        var written = ByteBuffer()
        written.writeUDPDatagramHeader(header)
        var reread = written
        precondition((try? reread.readUDPDatagramHeader()) == header, "a header did not read back")
        // A name is normalized (or taken as the address it spells): only addresses sent as such
        // come back byte for byte; a name comes back as a name that reads to the same header.
        if input.count > 3, input[3] != 3 {
            // RSV (the first two bytes) is ignored on the way in and written as zero.
            precondition(Array(written.readableBytesView.dropFirst(2)) == Array(input[2..<consumed]), "an address header did not serialise back")
        }
    }

    /// The PROXY protocol reader: whole or one byte at a time, the same outcome, and a header read
    /// consumes the same bytes either way (the first input byte picks the expected version).
    public static func proxyHeader(_ input: [UInt8]) {
        guard let first = input.first else { return }
        let version = ProxyProtocolVersion.allCases[Int(first) % ProxyProtocolVersion.allCases.count]
        let bytes = Array(input.dropFirst())
        var whole = ByteBuffer(bytes: bytes)
        let wholeResult = Result { () throws(ProxyHeaderError) in try whole.readProxyHeader(version) }
        var split = ByteBuffer()
        var splitResult: Result<ProxyHeader?, ProxyHeaderError> = .success(nil)
        for byte in bytes {
            split.writeInteger(byte)
            splitResult = Result { () throws(ProxyHeaderError) in try split.readProxyHeader(version) }
            if case .success(nil) = splitResult { continue }
            break
        }
        switch (wholeResult, splitResult) {
        case (.success(let a), .success(let b)):
            precondition(a == b, "split reading gave another header")
            if a != nil { precondition(whole.readerIndex == split.readerIndex, "split reading consumed other bytes") }
        case (.failure, .failure): break
        default: preconditionFailure("whole and split reading disagree: \(wholeResult) vs \(splitResult)")
        }
    }

    /// The configuration loader on arbitrary text: a configuration or a list of problems, never a crash.
    public static func configuration(_ input: [UInt8]) {
        let text = String(decoding: input, as: UTF8.self)
        do {
            let configuration = try ConfigurationLoader.parse(yaml: text, file: "fuzz.yaml")
            _ = configuration.validate()
            _ = configuration.policySummary
        } catch {
            precondition(!error.problems.isEmpty, "an error with no problem in it")
            _ = error.description
        }
    }

    /// Address blocks, names and addresses against a policy: no crash, and blocks read back.
    public static func policy(_ input: [UInt8]) {
        let text = String(decoding: input.prefix(64), as: UTF8.self)
        if let block = CIDR(text) {
            precondition(CIDR(block.description) == block, "\(block) did not read back")
            precondition(block.contains(block.network), "\(block) does not hold its own network")
        }
        let policy = Policy(rules: [
            EgressRule(name: "deny-corp", action: .deny, to: [.domainSuffix("corp.example")]),
            EgressRule(name: "lan", action: .allow, to: [.block(CIDR("10.1.0.0/16")!)], ports: [22...22]),
            EgressRule(name: "public", action: .allow, to: [.any]),
        ])
        // The server's compiled form must decide as the rules tried one by one do.
        let compiled = CompiledPolicy(policy, indexFrom: 0)
        let subject = PolicySubject(user: input.first.map { "user\($0)" }, groups: [])
        let port = UInt16(input.count % 65_536)
        let byName = policy.checkName(text, port: port, command: .connect, subject: subject)
        precondition(compiled.checkName(text, port: port, command: .connect, subject: subject) == byName, "compiled name check differs for \(text)")
        if input.count >= 16 {
            let addresses = [IPAddress.v6(SOCKSIPv6Address(bytes: input.prefix(16))), .v4(SOCKSIPv4Address(input[0], input[1], input[2], input[3]))]
            let decision = policy.checkAddresses(addresses, name: text, port: 22, command: .connect, subject: subject)
            precondition(
                compiled.checkAddresses(addresses, name: text, port: 22, command: .connect, subject: subject) == decision,
                "compiled address check differs for \(addresses)")
            switch decision {
            case .allow(let allowed, _, _):
                // Only the LAN rule's block opens a special address (NAT64 and mapped ones judged as IPv4).
                for address in allowed {
                    let special = SpecialAddressGuard.block(containing: address) != nil
                    precondition(!special || CIDR("10.1.0.0/16")!.contains(SpecialAddressGuard.judged(address)), "\(address) passed the guard")
                }
            case .deny:
                break
            }
        }
    }
}
