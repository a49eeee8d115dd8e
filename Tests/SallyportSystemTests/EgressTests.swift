import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Testing

/// Egress addresses and interfaces, over real routes: two target namespaces of the test's own,
/// each behind a veth from this host. The first link carries two addresses on this side; both
/// targets have the same address, so only the interface a socket is bound to decides which one it
/// reaches. Each target answers with the source address it saw.
@Suite(.serialized, .system, .timeLimit(.minutes(3)), .enabled(if: underPAMWrapper, "needs pam_wrapper: run through `make test`"))
struct EgressTests {
    let ip = which("ip") ?? "/usr/sbin/ip"
    let python = "/usr/bin/python3"

    /// A target in `namespace` at `address`: over TCP it writes "peer=IP\n" and closes; over UDP it
    /// answers each datagram with "peer=IP". Prints "port N" once both listen.
    func target(in namespace: String, at address: String) throws -> BackgroundProcess {
        try BackgroundProcess(ip, ["netns", "exec", namespace, python, "-c", """
            import socket, sys, threading
            tcp = socket.create_server((sys.argv[1], 0))
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((sys.argv[1], port))
            def answer_udp():
                for _ in range(100):
                    data, peer = udp.recvfrom(2048)
                    udp.sendto(b"peer=" + peer[0].encode(), peer)
            threading.Thread(target=answer_udp, daemon=True).start()
            print("port %d" % port, file=sys.stderr, flush=True)
            for _ in range(100):
                conn, peer = tcp.accept()
                conn.sendall(b"peer=" + peer[0].encode() + b"\\n")
                conn.close()
            """, address], environment: withoutWrappers)
    }

    /// Logs in as `user` and connects to `destination`; the target's "peer=IP" line, or the reply
    /// code when the CONNECT failed.
    func peerSeen(port: Int, user: String, password: String, destination: SOCKSEndpoint) throws -> String {
        let socket = try TestSocket(host: "127.0.0.1", port: port)
        try socket.send([5, 1, 2, 1, UInt8(user.utf8.count)] + Array(user.utf8) + [UInt8(password.utf8.count)] + Array(password.utf8))
        guard try socket.receive(exactly: 4) == [5, 2, 1, 0] else { return "login failed" }
        var request = ByteBuffer()
        request.writeSOCKSRequest(SOCKSRequest(command: .connect, destination: destination))
        try socket.send(Array(request.readableBytesView))
        let reply = try socket.readReply()
        guard reply.code == .succeeded else { return "reply \(reply.code.rawValue)" }
        return String(decoding: try socket.receiveUntilEOF(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func eachUsersRuleSendsTheirConnectionsFromItsAddressOrInterface() async throws {
        let (first, second) = (uniqueLinkName(), uniqueLinkName())
        let subnet = uniqueSubnet24()
        let (office, lab, viaSecond, targetIP) = ("\(subnet).1", "\(subnet).2", "\(subnet).3", "\(subnet).100")
        try await withNetworkNamespace(resolvConf: "", hosts: "") { targetA in
            try await withNetworkNamespace(resolvConf: "", hosts: "") { targetB in
                defer { for link in [first, second] { deleteLink(link) } }
                try await addLink(first, to: targetA, hostAddresses: [office + "/24", lab + "/24"], farAddress: targetIP + "/24")
                try await addLink(second, to: targetB, hostAddresses: [viaSecond + "/24"], farAddress: targetIP + "/24")
                let targets = [try target(in: targetA, at: targetIP), try target(in: targetB, at: targetIP)]
                defer { for target in targets { target.signal(SIGKILL) } }
                var ports: [Int] = []
                for target in targets {
                    #expect(await target.waitForStderr(containing: "port "), "\(target.stderr)")
                    ports.append(try #require(Int(target.stderr.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "")))
                }
                let server = try await ServerProcess.start("""
                    listen: [127.0.0.1:0]
                    methods: [username]
                    auth:
                      pam: {service: sallyport-test}
                    rules:
                      - {name: alice-lab, action: allow, who: [user:alice], to: [\(subnet).0/24], egress: {address: \(lab)}}
                      - {name: bob-office, action: allow, who: [user:bob], to: [\(subnet).0/24], egress: {address: \(office)}}
                      - {name: carol-second-link, action: allow, who: [user:carol], to: [\(subnet).0/24], egress: {interface: \(second)}}
                    """)
                defer { server.process.signal(SIGKILL) }
                let octets = targetIP.split(separator: ".").compactMap { UInt8($0) }
                @Sendable func destination(_ port: Int) -> SOCKSEndpoint {
                    SOCKSEndpoint(host: .ipv4(.init(octets[0], octets[1], octets[2], octets[3])), port: UInt16(port))
                }
                let targetPorts = ports
                let seen = try await onThread {
                    [
                        try peerSeen(port: server.port, user: "alice", password: "wonderland", destination: destination(targetPorts[0])),
                        try peerSeen(port: server.port, user: "bob", password: "builder", destination: destination(targetPorts[0])),
                        // The second target listens on the same address and port only by chance:
                        // carol's rule binds her socket to the second link, where its own port is.
                        try peerSeen(port: server.port, user: "carol", password: "c4rol-pw", destination: destination(targetPorts[1])),
                    ]
                }
                #expect(seen[0] == "peer=\(lab)", "alice's rule names the lab address")
                #expect(seen[1] == "peer=\(office)", "bob's rule names the office address")
                #expect(seen[2] == "peer=\(viaSecond)", "carol's rule names the second link: \(seen[2]) \(server.process.stderr)")
            }
        }
    }

    @Test func theGlobalEgressAddressHoldsForUDPDestinationsToo() async throws {
        let link = uniqueLinkName()
        let subnet = uniqueSubnet24()
        let (primary, chosen, targetIP) = ("\(subnet).1", "\(subnet).2", "\(subnet).100")
        try await withNetworkNamespace(resolvConf: "", hosts: "") { namespace in
            defer { deleteLink(link) }
            try await addLink(link, to: namespace, hostAddresses: [primary + "/24", chosen + "/24"], farAddress: targetIP + "/24")
            let target = try target(in: namespace, at: targetIP)
            defer { target.signal(SIGKILL) }
            #expect(await target.waitForStderr(containing: "port "))
            let port = try #require(Int(target.stderr.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""))
            let server = try await ServerProcess.start("""
                listen: [127.0.0.1:0]
                egress: {address: \(chosen)}
                rules: [{name: lab, action: allow, to: [\(subnet).0/24]}]
                """)
            defer { server.process.signal(SIGKILL) }
            let octets = targetIP.split(separator: ".").compactMap { UInt8($0) }
            let destination = SOCKSEndpoint(host: .ipv4(.init(octets[0], octets[1], octets[2], octets[3])), port: UInt16(port))
            let answer = try await onThread { try Self.udpAnswers(proxy: server.port, from: [destination]) }
            #expect(answer == ["peer=\(chosen)"], "\(server.process.stderr) \(target.stderr)")
            // And TCP, through the same default.
            let tcp = try await onThread { () throws -> String in
                let socket = try TestSocket(host: "127.0.0.1", port: server.port)
                guard try socket.socksConnect(to: destination).code == .succeeded else { return "refused" }
                return String(decoding: try socket.receiveUntilEOF(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            #expect(tcp == "peer=\(chosen)")
        }
    }

    /// Through one UDP association, a datagram to each destination in turn; each answer's text.
    static func udpAnswers(proxy: Int, from destinations: [SOCKSEndpoint]) throws -> [String] {
        let (control, reply) = try udpAssociate(proxyPort: proxy)
        defer { control.shutdownWrite() }
        let udp = try TestUDPSocket()
        return try destinations.map { destination in
            try udp.send(TestUDPSocket.packet(to: destination, Array("who?".utf8)), to: try reply.bound.testAddress)
            guard let datagram = udp.receive(timeout: 10) else { return "no answer" }
            return String(decoding: try TestUDPSocket.unpack(datagram).1, as: UTF8.self)
        }
    }

    /// Each rule's egress address holds for the UDP destinations it allows: one association, two
    /// destinations, two rules, two source addresses.
    @Test func eachRulesEgressAddressHoldsForTheUDPDestinationsItAllows() async throws {
        let link = uniqueLinkName()
        let subnet = uniqueSubnet24()
        let (first, second, targetIP) = ("\(subnet).1", "\(subnet).2", "\(subnet).100")
        try await withNetworkNamespace(resolvConf: "", hosts: "") { namespace in
            defer { deleteLink(link) }
            try await addLink(link, to: namespace, hostAddresses: [first + "/24", second + "/24"], farAddress: targetIP + "/24")
            let targets = try [target(in: namespace, at: targetIP), target(in: namespace, at: targetIP)]
            defer { for target in targets { target.signal(SIGKILL) } }
            var ports: [Int] = []
            for target in targets {
                #expect(await target.waitForStderr(containing: "port "))
                ports.append(try #require(Int(target.stderr.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "")))
            }
            let server = try await ServerProcess.start("""
                listen: [127.0.0.1:0]
                rules:
                  - {name: by-first, action: allow, to: [\(targetIP)/32], ports: [\(ports[0])], egress: {address: \(first)}}
                  - {name: by-second, action: allow, to: [\(targetIP)/32], ports: [\(ports[1])], egress: {address: \(second)}}
                """)
            defer { server.process.signal(SIGKILL) }
            let octets = targetIP.split(separator: ".").compactMap { UInt8($0) }
            let destinations = ports.map { SOCKSEndpoint(host: .ipv4(.init(octets[0], octets[1], octets[2], octets[3])), port: UInt16($0)) }
            let answers = try await onThread { try Self.udpAnswers(proxy: server.port, from: destinations + destinations.reversed()) }
            #expect(answers == ["peer=\(first)", "peer=\(second)", "peer=\(second)", "peer=\(first)"], "\(server.process.stderr)")
        }
    }
}
