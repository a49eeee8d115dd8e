import NIOConcurrencyHelpers
import NIOCore
import SOCKSProtocol

/// Who a session belongs to, once its client has authenticated.
public struct Identity: Hashable, Sendable {
    /// The user name, or nil for a session that authenticated with method `none`.
    public var user: String?
    /// The groups the user belongs to, for the egress policy.
    public var groups: [String]

    public init(user: String?, groups: [String] = []) {
        self.user = user
        self.groups = groups
    }

    /// The identity of a session that used method `none`.
    public static let anonymous = Identity(user: nil)
}

/// What an authenticator is asked: a user name and password, from a client.
public struct AuthenticationRequest: Sendable {
    public var username: String
    /// The password exactly as the client sent it, in memory that is wiped when it goes. Never log it.
    public var password: Password
    /// The client's address, for `PAM_RHOST` and throttling.
    public var client: SocketAddress?
    /// Whether an answer is still awaited: a check that has not started by the time its client
    /// has gone is dropped. Called from the checker's threads.
    public var stillWanted: @Sendable () -> Bool

    public init(username: String, password: Password, client: SocketAddress?, stillWanted: @escaping @Sendable () -> Bool = { true }) {
        self.username = username
        self.password = password
        self.client = client
        self.stillWanted = stillWanted
    }

    public init(username: String, password: [UInt8], client: SocketAddress?, stillWanted: @escaping @Sendable () -> Bool = { true }) {
        self.init(username: username, password: Password(bytes: password), client: client, stillWanted: stillWanted)
    }
}

/// Held by a session while its login is checked; the session says when it has gone.
public final class LoginWaiter: Sendable {
    private let left = NIOLockedValueBox(false)

    public init() {}

    /// The client is gone: a check not yet started for it need not run.
    public func leave() { left.withLockedValue { $0 = true } }

    public var isWaiting: Bool { !left.withLockedValue { $0 } }
}

extension AuthenticationRequest: CustomStringConvertible {
    public var description: String { "AuthenticationRequest(username: \(username), password: <redacted>)" }
}

/// How an authentication ended.
public enum AuthenticationResult: Sendable, Equatable {
    case success(Identity)
    /// The credentials were checked and are wrong (or the account may not log in). Counts towards
    /// throttling. `reason` is for the log (never the password).
    case failure(reason: String)
    /// Not checked at all: the client is throttled or the checker is saturated. Does not count as a
    /// failed login.
    case refused(reason: String, why: Refusal = .overloaded)

    /// Why a login was not checked.
    public enum Refusal: String, Sendable, Equatable {
        /// The client's recent failures: the login throttle.
        case throttled
        /// The checker's queue or this client's share of it is full, or the checker is unavailable.
        case overloaded
    }
}

/// Checks RFC 1929 credentials. Implementations answer asynchronously on the given event loop and must
/// never block it.
public protocol Authenticator: Sendable {
    func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult>
}
