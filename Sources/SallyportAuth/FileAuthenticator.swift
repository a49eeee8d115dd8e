import NIOCore
import SOCKSProtocol

/// RFC 1929 credentials checked against a user file's crypt(3) hashes, on the check pool's threads.
///
/// An unknown user's password is hashed against a decoy of the file's most common method and cost,
/// and every failure is answered `failDelay` after its check began (an event-loop timer, no thread
/// held): an unknown user and a wrong password cost the same and look the same.
public final class FileAuthenticator: Authenticator {
    public let users: UserFile
    public let pool: CheckPool
    public let failDelay: TimeAmount

    public init(users: UserFile, pool: CheckPool, failDelay: TimeAmount) {
        self.users = users
        self.pool = pool
        self.failDelay = failDelay
    }

    public func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult> {
        let (users, failDelay) = (self.users, self.failDelay)
        return pool.run(request, on: eventLoop) {
            let started = NIODeadline.now()
            let identity = Self.check(request.username, request.password, in: users)
            let spent = NIODeadline.now() - started
            guard let identity else {
                return (.failure(reason: "user file: unknown user, wrong password or locked account"), max(failDelay - spent, .zero))
            }
            return (.success(identity), .zero)
        }
    }

    /// The check itself (blocking, slow by design): the identity when the password is right. An
    /// unknown user costs one hash against the decoy.
    public static func check(_ username: String, _ password: Password, in users: UserFile) -> Identity? {
        guard let account = users.accounts[username] else {
            if let decoy = users.decoyHash { _ = PasswordHash.verify(password, hash: decoy) }
            return nil
        }
        guard PasswordHash.verify(password, hash: account.hash) else { return nil }
        return Identity(user: username, groups: account.groups)
    }
}
