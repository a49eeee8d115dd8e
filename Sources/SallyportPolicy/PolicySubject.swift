import SOCKSProtocol

/// The subject and the actions of the policy's rules.

/// Who is asking: the user of an authenticated session (nil for method none) and their groups.
public struct PolicySubject: Hashable, Sendable {
    public var user: String?
    public var groups: [String]

    public init(user: String?, groups: [String] = []) {
        self.user = user
        self.groups = groups
    }
}

/// Allow or deny.
public enum PolicyAction: String, Hashable, Sendable {
    case allow
    case deny
}

/// How sessions a rule allows leave this host: from a source address, through an interface,
/// through another proxy.
public struct EgressRoute: Hashable, Sendable {
    /// The source address of outbound sockets (TCP and UDP).
    public var address: IPAddress?
    /// The interface outbound sockets are bound to.
    public var interface: String?
    /// The proxy CONNECT sessions go through (UDP goes direct).
    public var via: UpstreamProxy?

    public init(address: IPAddress? = nil, interface: String? = nil, via: UpstreamProxy? = nil) {
        self.address = address
        self.interface = interface
        self.via = via
    }
}
