import SallyportTestSupport
import Foundation
import SOCKSProtocol
import Testing

/// A rule's `to_file` list in the real binary: names and blocks refused by it, the rest allowed,
/// and a reload that reads the file again.
@Suite(.system, .timeLimit(.minutes(3))) struct BlocklistTests {
    func reply(_ port: Int, to destination: SOCKSEndpoint) throws -> SOCKSReplyCode {
        let socket = try TestSocket(host: "127.0.0.1", port: port)
        return try socket.socksConnect(to: destination).code
    }

    @Test func namesAndBlocksInTheFileAreRefusedAndAReloadReadsItAgain() async throws {
        let echo = try await TargetServer.echo()
        let directory = NSTemporaryDirectory() + "sallyport-blocklist-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let list = directory + "/blocked.list"
        try "# test list\n.blocked.test\n127.0.0.2\n".write(toFile: list, atomically: true, encoding: .utf8)
        let server = try await ServerProcess.start("""
            listen: [127.0.0.1:0]
            rules:
              - {name: blocklist, action: deny, to_file: \(list)}
              - {name: local, action: allow, to: [127.0.0.0/8]}
            """)
        defer { server.process.signal(SIGKILL) }
        let port = echo.port
        let before = try await onThread {
            [
                try reply(server.port, to: SOCKSEndpoint(host: .domain("www.blocked.test"), port: UInt16(port))),
                try reply(server.port, to: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 2)), port: UInt16(port))),
                try reply(server.port, to: loopback4(port)),
                try reply(server.port, to: SOCKSEndpoint(host: .domain("localhost"), port: UInt16(port))),
            ]
        }
        #expect(before == [.notAllowed, .notAllowed, .succeeded, .succeeded])
        #expect(await server.process.waitForStderr(containing: "rule=blocklist", count: 2))
        // The list grows; a reload takes it.
        try "# test list\n.blocked.test\n127.0.0.2\nlocalhost\n".write(toFile: list, atomically: true, encoding: .utf8)
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "configuration reloaded"))
        let after = try await onThread {
            [try reply(server.port, to: SOCKSEndpoint(host: .domain("localhost"), port: UInt16(port))), try reply(server.port, to: loopback4(port))]
        }
        #expect(after == [.notAllowed, .succeeded])
        // A list that no longer reads keeps the running configuration.
        try "not a name\n".write(toFile: list, atomically: true, encoding: .utf8)
        server.process.signal(SIGHUP)
        #expect(await server.process.waitForStderr(containing: "blocked.list:1"))
        let kept = try await onThread { try reply(server.port, to: SOCKSEndpoint(host: .domain("localhost"), port: UInt16(port))) }
        #expect(kept == .notAllowed)
        await echo.stop()
    }
}
