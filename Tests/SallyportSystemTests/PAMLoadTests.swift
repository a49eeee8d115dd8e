import SallyportTestSupport
import Foundation
import NIOCore
import NIOPosix
import SOCKSProtocol
import Sallyport
import SallyportAuth
import Testing

/// PAM under load: a stack that blocks its threads, one that delays failures, clients that leave
/// while their checks wait, and one client filling the queue.
/// Serialized: the gated stack's gate is one file, and each test here times PAM's one or two threads.
@Suite(.serialized, .system, .timeLimit(.minutes(3)), .enabled(if: underPAMWrapper, "needs pam_wrapper: run through `make test`"))
struct PAMLoadTests {
    @Test(.timing) func aBlockingPAMStackNeverStallsOtherClientsAndTheQueueBoundAnswersAtOnce() async throws {
        let echo = try await TargetServer.echo()
        // Each check holds its PAM thread for 1 s (pam_exec sleeping); 2 threads and room for 4 checks.
        let (proxy, pam) = try await pamProxy(service: "sallyport-blocking", threads: 2, maxPending: 4, extraListener: true)
        let nonePort = proxy.addresses[1].port!
        let destination = SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port))

        // A session relaying before the flood starts.
        let relaying = try await onThread { () throws -> TestSocket in
            let socket = try TestSocket(host: "127.0.0.1", port: nonePort)
            let reply = try socket.socksConnect(to: destination)
            guard reply.code == .succeeded else { throw TestSocketError("connect failed", errno: 0) }
            return socket
        }

        // The flood: 12 slow failures at once.
        let flood = Task {
            try await withThrowingTaskGroup(of: (UInt8, Double).self) { group in
                for _ in 0..<12 {
                    group.addTask {
                        try await onThread {
                            let start = Date()
                            let outcome = try socksLogin(proxyPort: proxy.port, user: Array("slowpoke".utf8), password: Array("hare".utf8), destination: destination)
                            return (outcome.status, Date().timeIntervalSince(start))
                        }
                    }
                }
                var results: [(UInt8, Double)] = []
                for try await result in group { results.append(result) }
                return results
            }
        }
        // Wait until PAM is saturated.
        let saturated = await waitUntil(timeout: 5) { pam.pendingChecks >= 4 }
        // A precondition of the measurement, which a sanitizer's slowness can miss.
        #expect(saturated || underSanitizer)

        // While it is: the running session keeps moving bytes, and a new CONNECT with method none
        // on the other listener goes through at once.
        let (busy, roundTrips, connectSeconds) = try await onThread {
            // The flood is still being answered as the measurement starts.
            let busy = pam.pendingChecks > 0
            var slowest = 0.0
            for index in 0..<50 {
                let start = Date()
                try relaying.send([UInt8(index)])
                try expectBytesHelper(try relaying.receive(exactly: 1), [UInt8(index)])
                slowest = max(slowest, Date().timeIntervalSince(start))
            }
            let roundTrips = slowest
            let connectStart = Date()
            let socket = try TestSocket(host: "127.0.0.1", port: nonePort)
            let reply = try socket.socksConnect(to: destination, payload: [42])
            try expectBytesHelper(try socket.receive(exactly: 1), [42])
            guard reply.code == .succeeded else { throw TestSocketError("connect failed", errno: 0) }
            return (busy, roundTrips, Date().timeIntervalSince(connectStart))
        }
        #expect(busy || underSanitizer, "PAM was still busy when the other clients were served")
        // A stall behind PAM would cost a whole check (1 s, the stack's sleep) on some round trip;
        // a loaded machine costs tens of milliseconds (50 round trips once took 2 s in all on CI).
        #expect(roundTrips < 0.9, "the slowest of 50 round trips took \(roundTrips) s while PAM was saturated")
        #expect(connectSeconds < 0.9, "a CONNECT took \(connectSeconds) s while PAM was saturated")

        let results = try await flood.value
        #expect(results.allSatisfy { $0.0 != 0 })
        // Past the bound, logins are refused rather than queued, and the answer comes at once
        // rather than after a queue of 1 s checks.
        #expect(await proxy.logs.wait { $0.filter { $0.contains("too many logins in progress") }.count >= 12 - 4 - 2 })
        // "At once": before the first check of the blocking stack (1 s) could have ended.
        let immediate = results.filter { $0.1 < 0.9 }
        #expect(immediate.count >= 12 - 4 - 2 || underSanitizer, "answers: \(results.map { $0.1 })")
        await proxy.stop()
        await pam.shutdown()
        await echo.stop()
    }

    @Test func throttledClientIsRefusedWithoutPAMAndRecovers() async throws {
        let echo = try await TargetServer.echo()
        // A 3 s block: long enough that the blocked attempt below lands inside it even on a loaded
        // machine (with 1 s, a slow CI run once got there after the block had ended).
        let throttle = LoginThrottle.Configuration(maxFailures: 3, window: .seconds(60), backoff: .seconds(3), maxBackoff: .seconds(12))
        let (proxy, pam) = try await pamProxy(throttle: throttle)
        let destination = SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port))
        for _ in 0..<3 {
            let outcome = try await onThread { try socksLogin(proxyPort: proxy.port, user: Array("alice".utf8), password: Array("guess".utf8), destination: destination) }
            #expect(outcome.status != 0)
        }
        #expect(pam.transactionsStarted == 3)
        // Blocked now: even the right password is refused, and PAM is not called.
        let blocked = try await onThread { try socksLogin(proxyPort: proxy.port, user: Array("alice".utf8), password: Array("wonderland".utf8), destination: destination) }
        #expect(blocked.status != 0)
        #expect(pam.transactionsStarted == 3)
        #expect(await proxy.logs.wait { $0.contains { $0.contains("end=auth_refused") } })
        // After the backoff the client may log in again.
        try await Task.sleep(for: .milliseconds(3300))
        let recovered = try await onThread { try socksLogin(proxyPort: proxy.port, user: Array("alice".utf8), password: Array("wonderland".utf8), destination: destination) }
        #expect(recovered.status == 0)
        #expect(recovered.reply == .succeeded)
        #expect(pam.transactionsStarted == 4)
        await proxy.stop()
        await pam.shutdown()
        await echo.stop()
    }

    @Test(.timing) func theDelayAfterAFailureIsATimerNotASleepingPAMThread() async throws {
        // One PAM thread; a stack that asks for about 1 s after each failure (pam_faildelay;
        // Linux-PAM varies it by up to half).
        let pam = PAMAuthenticator(configuration: .init(service: "sallyport-slow", threads: 1, maxPending: 16))
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let request = AuthenticationRequest(username: "slowpoke", password: Array("hare".utf8), client: try SocketAddress(ipAddress: "127.0.0.1", port: 1))
        let start = NIODeadline.now()
        let answers = (0..<6).map { _ in
            pam.authenticate(request, on: eventLoop).map { result in (result, NIODeadline.now() - start) }
        }
        // The one thread is free again long before the answers are due: slept on the thread, six
        // failures would hold it for at least 3 s.
        let threadFree = await waitUntil(timeout: 2.5) { pam.transactionsFinished == 6 }
        let freeAfter = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        #expect(threadFree, "the PAM thread was busy for \(freeAfter) s")
        var times: [Double] = []
        for answer in answers {
            let (result, elapsed) = try await answer.get()
            guard case .failure = result else {
                Issue.record("expected a failure, got \(result)")
                continue
            }
            times.append(Double(elapsed.nanoseconds) / 1e9)
        }
        // Each failure is still answered after its delay.
        #expect(times.count == 6 && times.allSatisfy { $0 >= 0.4 }, "\(times)")
        await pam.shutdown()
    }

    @Test func anotherAccountsGoodLoginDoesNotResetTheThrottle() async throws {
        let echo = try await TargetServer.echo()
        let throttle = LoginThrottle.Configuration(maxFailures: 5, window: .seconds(60), backoff: .seconds(30), maxBackoff: .seconds(60))
        let (proxy, pam) = try await pamProxy(throttle: throttle)
        let destination = SOCKSEndpoint(host: .ipv4(.init(127, 0, 0, 1)), port: UInt16(echo.port))
        func login(_ user: String, _ password: String) async throws -> UInt8 {
            try await onThread { try socksLogin(proxyPort: proxy.port, user: Array(user.utf8), password: Array(password.utf8), destination: destination) }.status
        }
        // Four wrong passwords for bob, then alice logs in from the same address, then one more
        // wrong one for bob: five failures in all, and the address is blocked.
        for _ in 0..<4 { #expect(try await login("bob", "guess") != 0) }
        #expect(try await login("alice", "wonderland") == 0)
        #expect(try await login("bob", "guess") != 0)
        let checked = pam.transactionsStarted
        #expect(try await login("bob", "builder") != 0)
        #expect(pam.transactionsStarted == checked)  // refused without asking PAM
        #expect(await proxy.logs.wait { $0.contains { $0.contains("user=bob") && $0.contains("end=auth_refused") } })
        await pam.shutdown()
    }

    @Test func checksQueuedForClientsThatLeftAreDroppedUnrun() async throws {
        // One thread, held for 1 s by each check: what is queued behind the first waits.
        let pam = PAMAuthenticator(configuration: .init(service: "sallyport-blocking", threads: 1, maxPending: 16, maxPendingPerClient: 16))
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let client = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
        let good = AuthenticationRequest(username: "slowpoke", password: Array("tortoise".utf8), client: client)
        let first = pam.authenticate(good, on: eventLoop)
        let waiters = (0..<5).map { _ in LoginWaiter() }
        let abandoned = waiters.map { waiter in
            pam.authenticate(
                AuthenticationRequest(username: "slowpoke", password: Array("hare".utf8), client: client, stillWanted: { waiter.isWaiting }),
                on: eventLoop)
        }
        let last = pam.authenticate(good, on: eventLoop)
        // Their clients go while the first check holds the thread.
        for waiter in waiters { waiter.leave() }
        guard case .success = try await first.get() else { Issue.record("the first check failed"); return }
        for answer in abandoned {
            let result = try await answer.get()
            #expect(result == .refused(reason: "the client left before its check ran"))
        }
        guard case .success = try await last.get() else { Issue.record("the last check failed"); return }
        #expect(pam.transactionsStarted == 2)
        #expect(pam.checksDropped == 5)
        await pam.shutdown()
    }

    @Test func aClientThatLeavesWhileItsLoginIsQueuedCostsNoPAMCheck() async throws {
        let echo = try await TargetServer.echo()
        // The gated stack holds its check until the test opens the gate (a file).
        let gate = (ProcessInfo.processInfo.environment["SALLYPORT_PAM_FIXTURES"] ?? "") + "/gate-open"
        try? FileManager.default.removeItem(atPath: gate)
        defer { _ = FileManager.default.createFile(atPath: gate, contents: nil) }  // never leave a check waiting
        let (proxy, pam) = try await pamProxy(service: "sallyport-gated", threads: 1, maxPending: 16)
        let destination = loopback4(echo.port)
        // One login holds the only thread; three more send their credentials and hang up.
        let holder = Task { try await onThread { try socksLogin(proxyPort: proxy.port, user: Array("slowpoke".utf8), password: Array("tortoise".utf8), destination: destination) } }
        #expect(await waitUntil(timeout: 5) { pam.transactionsStarted == 1 })
        try await onThread {
            for _ in 0..<3 {
                let socket = try TestSocket(host: "127.0.0.1", port: proxy.port)
                try socket.send([5, 1, 2])
                _ = try socket.receive(exactly: 2)
                try socket.send([1, 8] + Array("slowpoke".utf8) + [4] + Array("hare".utf8))
            }
        }
        // Their sessions end (and are logged) while the first check still holds the thread.
        #expect(await proxy.logs.wait { $0.filter { $0.contains("msg=session") && $0.contains("client_closed") }.count == 3 }, "\(proxy.logs.lines)")
        #expect(pam.pendingChecks == 4)
        _ = FileManager.default.createFile(atPath: gate, contents: nil)
        #expect(try await holder.value.status == 0)
        #expect(await waitUntil(timeout: 5) { pam.pendingChecks == 0 })
        #expect(pam.transactionsStarted == 1)
        #expect(pam.checksDropped == 3)
        await proxy.stop()
        await pam.shutdown()
        await echo.stop()
    }

    @Test func oneClientCannotFillTheQueueForOthers() async throws {
        // Checks wait at the gate until the test has looked at the queue.
        let gate = (ProcessInfo.processInfo.environment["SALLYPORT_PAM_FIXTURES"] ?? "") + "/gate-open"
        try? FileManager.default.removeItem(atPath: gate)
        defer { _ = FileManager.default.createFile(atPath: gate, contents: nil) }
        let pam = PAMAuthenticator(configuration: .init(service: "sallyport-gated", threads: 1, maxPending: 8, maxPendingPerClient: 2))
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        func request(from address: String) throws -> AuthenticationRequest {
            AuthenticationRequest(username: "slowpoke", password: Array("hare".utf8), client: try SocketAddress(ipAddress: address, port: 1))
        }
        let greedy = try (0..<3).map { _ in pam.authenticate(try request(from: "127.0.0.1"), on: eventLoop) }
        let other = pam.authenticate(try request(from: "127.0.0.2"), on: eventLoop)
        // The third of one client's checks is refused at once; another client's is taken.
        #expect(try await greedy[2].get() == .refused(reason: "too many logins in progress from this client (auth.pam.max_pending_per_client)"))
        #expect(pam.pendingChecks == 3)
        _ = FileManager.default.createFile(atPath: gate, contents: nil)
        for answer in greedy.prefix(2) + [other] {
            guard case .failure = try await answer.get() else { Issue.record("expected a checked failure"); continue }
        }
        await pam.shutdown()
    }
}
