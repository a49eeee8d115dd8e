import SallyportTestSupport
import Foundation
import SOCKSProtocol
import Testing

/// Peers that vanish without a FIN or a reset (a laptop closed, a cable cut): a veth cable into a
/// namespace of the test's own is deleted under a running session, and what ends the session is
/// the idle timeout, or, long before it, TCP keepalive on the side that vanished.
@Suite(.serialized, .system, .timeLimit(.minutes(3))) struct VanishedPeerTests {
    let ip = which("ip") ?? "/usr/sbin/ip"
    let python = which("python3") ?? "/usr/bin/python3"

    /// A client at the far end of `cable` relays a byte to `echo`, then stays connected and silent;
    /// the cable is cut and the client killed. The session's access-log line and the seconds from
    /// the cut to it (nil: none within `timeout`).
    func vanishingClient(_ cable: Cable, server: ServerProcess, echo: Int, timeout: Double) async throws -> (String, Double)? {
        let client = try BackgroundProcess(ip, ["netns", "exec", cable.namespace, python, "-c", """
            import socket, struct, sys, time
            sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
            sock.sendall(b"\\x05\\x01\\x00\\x05\\x01\\x00\\x01\\x7f\\x00\\x00\\x01" + struct.pack(">H", int(sys.argv[3])) + b"!")
            got = b""
            while len(got) < 13:
                chunk = sock.recv(64)
                if not chunk:
                    break
                got += chunk
            print("ready" if len(got) >= 13 and got[1] == 0 and got[3] == 0 and got[-1:] == b"!" else "failed %r" % got, file=sys.stderr, flush=True)
            time.sleep(60)
            """, cable.hostIP, "\(server.port)", "\(echo)"], environment: withoutWrappers)
        defer { client.signal(SIGKILL) }
        #expect(await client.waitForStderr(containing: "ready"), "\(client.stderr) \(server.process.stderr)")
        // The cable is cut, then the client dies: its FIN or RST has no way to the server.
        #expect(try await cable.cut())
        let cutAt = Date()
        client.signal(SIGKILL)
        guard await server.process.waitForStderr(containing: "msg=session", timeout: timeout) else { return nil }
        let ended = Date().timeIntervalSince(cutAt)
        return (server.process.stderr.split(separator: "\n").first { $0.contains("msg=session") }.map(String.init) ?? "", ended)
    }

    func server(on address: String, _ settings: String, rules: String = loopbackRules) async throws -> ServerProcess {
        try await ServerProcess.start("listen: [\(address):0]\nallow_unauthenticated_remote: true\n" + settings + rules)
    }

    @Test(.timing) func aClientThatVanishesWithoutAFINIsEndedByTheIdleTimeout() async throws {
        let echo = try await TargetServer.echo()
        try await withCable { cable in
            let server = try await server(on: cable.hostIP, "timeouts: {idle: 2s}\nrelay: {keepalive: 0}\n")
            defer { server.process.signal(SIGKILL) }
            let ended = try await vanishingClient(cable, server: server, echo: echo.port, timeout: 10)
            let (session, seconds) = try #require(ended, "the session did not end")
            #expect(logfmtFields(session)["end"] == "idle_timeout", "\(session)")
            #expect(logfmtFields(session)["client"]?.hasPrefix(cable.farIP + ":") == true, "\(session)")
            // Not long after the idle timeout could fire (2 s from the last byte, before the cut).
            #expect(seconds < 2 * 1.25 + 1 || underSanitizer, "ended \(seconds) s after the cut")
        }
        await echo.stop()
    }

    /// Set in the file at start, or turned on by a reload (which sets it on the running listeners).
    @Test(.timing, arguments: [false, true])
    func keepaliveEndsAVanishedClientsSessionLongBeforeTheIdleTimeout(fromReload: Bool) async throws {
        let echo = try await TargetServer.echo()
        try await withCable { cable in
            let settings = "timeouts: {idle: 30m}\nrelay:\n  keepalive: {idle: 1s, interval: 1s, count: 2}\n"
            let server = try await server(on: cable.hostIP, fromReload ? "timeouts: {idle: 30m}\nrelay: {keepalive: 0}\n" : settings)
            defer { server.process.signal(SIGKILL) }
            if fromReload {
                try ("listen: [\(cable.hostIP):0]\nallow_unauthenticated_remote: true\n" + settings + loopbackRules)
                    .write(toFile: server.configPath, atomically: true, encoding: .utf8)
                server.process.signal(SIGHUP)
                #expect(await server.process.waitForStderr(containing: "configuration reloaded"))
            }
            let ended = try await vanishingClient(cable, server: server, echo: echo.port, timeout: 20)
            let (session, seconds) = try #require(ended, "the session did not end")
            #expect(logfmtFields(session)["end"] == "client_error", "\(session)")
            // Quiet for 1 s, then two probes 1 s apart go unanswered: about 3 s from the last byte.
            #expect(seconds < 10, "ended \(seconds) s after the cut")
        }
        await echo.stop()
    }

    @Test(.timing) func keepaliveEndsTheSessionOfATargetThatVanished() async throws {
        try await withCable { cable in
            // The target listens at the far end of the cable; the client is on this host.
            let target = try BackgroundProcess(ip, ["netns", "exec", cable.namespace, python, "-c", """
                import socket, sys, time
                server = socket.create_server((sys.argv[1], 0))
                print("port %d" % server.getsockname()[1], file=sys.stderr, flush=True)
                conn, _ = server.accept()
                conn.sendall(conn.recv(64))
                time.sleep(60)
                """, cable.farIP], environment: withoutWrappers)
            defer { target.signal(SIGKILL) }
            #expect(await target.waitForStderr(containing: "port "))
            let port = try #require(target.stderr.split(separator: " ").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
            let server = try await server(
                on: "127.0.0.1", "timeouts: {idle: 30m}\nrelay:\n  keepalive: {idle: 1s, interval: 1s, count: 2}\n",
                rules: "rules: [{name: far-end, action: allow, to: [\(cable.farIP)/32]}]\n")
            defer { server.process.signal(SIGKILL) }
            let client = try await onThread { () throws -> TestSocket in
                let socket = try TestSocket(host: "127.0.0.1", port: server.port, timeout: 30)
                let octets = cable.farIP.split(separator: ".").compactMap { UInt8($0) }
                let target = SOCKSEndpoint(host: .ipv4(.init(octets[0], octets[1], octets[2], octets[3])), port: UInt16(port))
                guard try socket.socksConnect(to: target, payload: [42]).code == .succeeded else { throw TestSocketError("connect", errno: 0) }
                _ = try socket.receive(exactly: 1)
                return socket
            }
            #expect(try await cable.cut())
            let cutAt = Date()
            target.signal(SIGKILL)
            #expect(await server.process.waitForStderr(containing: "msg=session", timeout: 20))
            let seconds = Date().timeIntervalSince(cutAt)
            let session = server.process.stderr.split(separator: "\n").first { $0.contains("msg=session") }.map(String.init) ?? ""
            #expect(logfmtFields(session)["end"] == "target_error", "\(session)")
            #expect(seconds < 10, "ended \(seconds) s after the cut")
            // And the client is told: its connection is closed.
            #expect(try await onThread { client.waitForClose() })
        }
    }
}
