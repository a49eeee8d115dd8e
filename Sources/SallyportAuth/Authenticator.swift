import NIOCore

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
    /// The password bytes exactly as the client sent them. Never log them.
    public var password: [UInt8]
    /// The client's address, for `PAM_RHOST` and throttling.
    public var client: SocketAddress?

    public init(username: String, password: [UInt8], client: SocketAddress?) {
        self.username = username
        self.password = password
        self.client = client
    }
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
    case refused(reason: String)
}

/// Checks RFC 1929 credentials. Implementations answer asynchronously on the given event loop and must
/// never block it.
public protocol Authenticator: Sendable {
    func authenticate(_ request: AuthenticationRequest, on eventLoop: any EventLoop) -> EventLoopFuture<AuthenticationResult>
}
