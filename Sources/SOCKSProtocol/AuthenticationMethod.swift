/// A SOCKS5 authentication method number (RFC 1928 section 3).
public struct AuthenticationMethod: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// `X'00'` NO AUTHENTICATION REQUIRED.
    public static let none = AuthenticationMethod(rawValue: 0x00)
    /// `X'01'` GSSAPI.
    public static let gssapi = AuthenticationMethod(rawValue: 0x01)
    /// `X'02'` USERNAME/PASSWORD (RFC 1929).
    public static let usernamePassword = AuthenticationMethod(rawValue: 0x02)
    /// `X'FF'` NO ACCEPTABLE METHODS.
    public static let noAcceptableMethods = AuthenticationMethod(rawValue: 0xFF)
}

extension AuthenticationMethod: CustomStringConvertible {
    public var description: String {
        switch self {
        case .none: return "none"
        case .gssapi: return "gssapi"
        case .usernamePassword: return "username"
        case .noAcceptableMethods: return "no-acceptable-methods"
        default: return "method-\(rawValue)"
        }
    }
}
