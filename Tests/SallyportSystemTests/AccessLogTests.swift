import SallyportTestSupport
import Foundation
import NIOCore
import SOCKSProtocol
import Testing

@testable import Sallyport

@Suite(.system, .timeLimit(.minutes(3))) struct AccessLogTests {
    @Test(.timing) func sessionLineCarriesEveryField() async throws {
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start(
            configure: { $0.listeners[0].methods = [.usernamePassword] }, authenticator: TestAuthenticator())
        let before = Date()
        let (clientPort, seconds) = try await onThread { () throws -> (Int, Double) in
            let start = Date()
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            var buffer = ByteBuffer()
            buffer.writeClientGreeting(ClientGreeting(methods: [.usernamePassword]))
            buffer.writeUsernamePasswordRequest(UsernamePasswordRequest(username: "alice", password: Password("pw-alice")))
            buffer.writeSOCKSRequest(SOCKSRequest(command: .connect, destination: SOCKSEndpoint(host: .domain("localhost"), port: UInt16(echo.port))))
            try socket.send(Array(buffer.readableBytesView))
            // The replies prove the server has accepted: from here on the session lasts at least
            // 0.4 s whatever the machine's load (part of what is measured, not a wait for an event).
            let replies = try socket.receive(exactly: 14)
            try expectBytesHelper(Array(replies.prefix(5)), [5, 2, 1, 0, 5])
            #expect(replies[5] == 0)
            try socket.send([UInt8](repeating: 1, count: 1000))
            usleep(400_000)
            socket.shutdownWrite()
            let received = try socket.receiveUntilEOF()
            let seconds = Date().timeIntervalSince(start)
            #expect(received.count == 1000)
            var local = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket.fd, $0, &length) }
            }
            let port = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
            return (port, seconds)
        }
        // The line is written once the server has ended the session, which may be after the client
        // saw the end: the window closes once the line is there.
        #expect(await proxy.logs.wait { !$0.filter { $0.contains(" msg=session ") }.isEmpty })
        let after = Date()
        let line = try #require(proxy.logs.sessionLines.first)
        let fields = logfmtFields(line)
        #expect(fields["level"] == "info")
        #expect(fields["session"]?.isEmpty == false)
        #expect(fields["listener"] == "127.0.0.1:\(proxy.port)")
        #expect(fields["client"] == "127.0.0.1:\(clientPort)")
        #expect(fields["user"] == "alice")
        #expect(fields["cmd"] == "connect")
        #expect(fields["dst"] == "localhost:\(echo.port)")
        #expect(fields["remote"] == "127.0.0.1:\(echo.port)")
        #expect(fields["reply"] == "0")
        #expect(fields["up"] == "1000")
        #expect(fields["down"] == "1000")
        #expect(fields["rule"] == "test-loopback")
        #expect(fields["end"] == "client_closed")
        // The duration is the session's: at least the 0.4 s the client waited after the replies, at
        // most what the client saw from connect to the last byte.
        let duration = try #require(Double(fields["duration"] ?? ""))
        #expect(duration >= 0.399 && duration <= seconds + 0.05, "logged \(duration) s, the client saw \(seconds) s")
        // ts: ISO 8601 UTC with milliseconds, written when the session ended.
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let timestamp = try #require(formatter.date(from: fields["ts"] ?? ""), "ts=\(fields["ts"] ?? "")")
        #expect(timestamp >= before.addingTimeInterval(-0.01) && timestamp <= after.addingTimeInterval(0.01), "ts \(timestamp) not in \(before)...\(after)")
        #expect(fields.count == 16, "fields: \(fields.keys.sorted())")
        await proxy.stop()
        await echo.stop()
    }

    @Test func failedNegotiationsAreLoggedToo() async throws {
        let proxy = try await TestProxy.start()
        try await onThread {
            let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
            try socket.send([5, 1, 2])  // offers only username; the listener offers none
            try expectBytesHelper(try socket.receive(exactly: 2), [5, 0xFF])
            _ = socket.waitForClose()
        }
        #expect(await proxy.logs.wait { $0.contains { $0.contains(" msg=session ") && $0.contains("end=no_acceptable_method") } })
        let fields = logfmtFields(proxy.logs.sessionLines.first ?? "")
        #expect(fields["user"] == "-")
        #expect(fields["cmd"] == "-")
        #expect(fields["reply"] == "-")
        await proxy.stop()
    }

    @Test func jsonFormatIsOneObjectPerLine() throws {
        let line = LineLogHandler.formatLine(
            format: .json, timestamp: "2026-01-01T00:00:00.000Z", level: .info, message: "session",
            metadata: [
                "user": "bob \"the\" builder", "up": .stringConvertible(12), "dst": "example.com:443", "duration": .stringConvertible(0.5),
                "session": "10", "client": "12345",
            ])
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        #expect(object?["msg"] as? String == "session")
        #expect(object?["user"] as? String == "bob \"the\" builder")
        #expect(object?["up"] as? Int == 12)
        #expect(object?["duration"] as? Double == 0.5)
        #expect(object?["dst"] as? String == "example.com:443")
        // Text that looks like a number (a session id, a user named 12345) stays a string.
        #expect(object?["session"] as? String == "10")
        #expect(object?["client"] as? String == "12345")
        #expect(!line.contains("\n"))
    }

    @Test func logfmtQuotesValuesWithSpaces() {
        let line = LineLogHandler.formatLine(
            format: .logfmt, timestamp: "t", level: .notice, message: "authentication failed",
            metadata: ["user": "a b", "client": "127.0.0.1:5"])
        #expect(line == "ts=t level=notice msg=\"authentication failed\" client=127.0.0.1:5 user=\"a b\"")
    }

    @Test func noPasswordEverAppearsInTheLogs() async throws {
        let echo = try await TargetServer.echo()
        let proxy = try await TestProxy.start(
            configure: { $0.listeners[0].methods = [.usernamePassword] }, authenticator: TestAuthenticator())
        let secret = "pw-carol"
        let wrong = "Tr0ub4dor&3-wrong"
        for password in [secret, wrong, "x\u{0}y"] {
            try await onThread {
                let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
                var buffer = ByteBuffer()
                buffer.writeClientGreeting(ClientGreeting(methods: [.usernamePassword]))
                buffer.writeUsernamePasswordRequest(UsernamePasswordRequest(username: "carol", password: Password(password)))
                buffer.writeSOCKSRequest(SOCKSRequest(command: .connect, destination: SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port))))
                try socket.send(Array(buffer.readableBytesView))
                socket.shutdownWrite()
                _ = try? socket.receiveUntilEOF()
            }
        }
        #expect(await proxy.logs.wait { $0.filter { $0.contains(" msg=session ") }.count == 3 })
        let text = proxy.logs.text
        #expect(text.contains("user=carol"))
        #expect(text.contains("auth_failed"))
        #expect(!text.contains(secret))
        #expect(!text.contains(wrong))
        #expect(!text.contains("Tr0ub4dor"))
        await proxy.stop()
        await echo.stop()
    }
}
