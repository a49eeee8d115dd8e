/// What can be wrong with bytes a SOCKS client sent.
public enum SOCKSProtocolError: Error, Hashable, Sendable {
    /// The version byte of a greeting or request was not 5.
    case invalidVersion(UInt8)
    /// The version byte of an RFC 1929 request was not 1.
    case invalidAuthenticationVersion(UInt8)
    /// An RFC 1929 username or password of length 0, or holding a NUL byte.
    case invalidCredentials
    /// `ATYP` other than 1, 3 or 4.
    case unsupportedAddressType(UInt8)
    /// A destination name that is not a DNS name (`DestinationName`).
    case invalidDomainName
    /// A SOCKS4 user id or SOCKS4a name longer than `SOCKS4Request.maximumField`.
    case fieldTooLong
    /// SOCKS4 on a listener that does not serve it.
    case socks4NotEnabled
}

extension SOCKSProtocolError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .invalidVersion(let version): return "invalid SOCKS version \(version)"
        case .invalidAuthenticationVersion(let version): return "invalid RFC 1929 version \(version)"
        case .invalidCredentials: return "empty username or password, or one holding a NUL byte"
        case .unsupportedAddressType(let type): return "unsupported address type \(type)"
        case .invalidDomainName: return "destination name is not a DNS name (letters, digits, -, _ and dots; at most 253 bytes)"
        case .fieldTooLong: return "SOCKS4 user id or name longer than \(SOCKS4Request.maximumField) bytes"
        case .socks4NotEnabled: return "SOCKS4 request on a listener without socks4"
        }
    }
}
