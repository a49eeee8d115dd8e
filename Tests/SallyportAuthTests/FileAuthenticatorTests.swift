import NIOCore
import NIOPosix
import SOCKSProtocol
import Testing

@testable import SallyportAuth

/// Logins checked against the user file through the shared check pool.
@Suite(.timeLimit(.minutes(1))) struct FileAuthenticatorTests {
    @Test func rightWrongUnknownAndLockedThroughThePool() async throws {
        let users = try UserFile.parse("alice:\(Vectors.yescrypt.1):staff\nlocked:!\(Vectors.bcrypt.1)\n").get()
        let pool = CheckPool(configuration: .init(threads: 2))
        let authenticator = FileAuthenticator(users: users, pool: pool, failDelay: .milliseconds(200))
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        func check(_ user: String, _ password: String) async throws -> (AuthenticationResult, Double) {
            let start = NIODeadline.now()
            let result = try await authenticator.authenticate(
                AuthenticationRequest(username: user, password: Password(password), client: nil), on: loop
            ).get()
            return (result, Double((NIODeadline.now() - start).nanoseconds) / 1e9)
        }
        let (right, _) = try await check("alice", Vectors.yescrypt.0)
        #expect(right == .success(Identity(user: "alice", groups: ["staff"])))
        for (user, password) in [("alice", "nope"), ("mallory", Vectors.yescrypt.0), ("locked", Vectors.bcrypt.0)] {
            let (result, seconds) = try await check(user, password)
            guard case .failure = result else {
                Issue.record("\(user) was not refused: \(result)")
                continue
            }
            // Answered the fail delay after the check began, whatever the check cost.
            #expect(seconds >= 0.19, "\(user): \(seconds) s")
        }
        #expect(pool.checksStarted == 4)
        await pool.shutdown()
    }
}
