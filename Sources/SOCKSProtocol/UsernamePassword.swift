import NIOCore

/// A password, kept out of every description so that it cannot reach a log by accident.
public struct Password: Hashable, Sendable {
    /// The bytes exactly as the client sent them.
    public var bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }
    public init(_ string: String) { self.bytes = Array(string.utf8) }
}

extension Password: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}

/// The RFC 1929 request: `VER ULEN UNAME PLEN PASSWD`.
public struct UsernamePasswordRequest: Hashable, Sendable {
    public var username: String
    public var password: Password

    public init(username: String, password: Password) {
        self.username = username
        self.password = password
    }
}

extension UsernamePasswordRequest: CustomStringConvertible {
    public var description: String { "UsernamePasswordRequest(username: \(username), password: <redacted>)" }
}

/// The RFC 1929 reply: `VER STATUS`; status 0 is success, anything else failure.
public struct UsernamePasswordReply: Hashable, Sendable {
    public var status: UInt8

    public init(status: UInt8) { self.status = status }

    public static let success = UsernamePasswordReply(status: 0x00)
    public static let failure = UsernamePasswordReply(status: 0x01)
}

extension ByteBuffer {
    /// Reads an RFC 1929 request. Returns nil, consuming nothing, when it is not all there yet.
    /// A zero length, or a NUL byte in either field, is an error: neither can be checked honestly.
    public mutating func readUsernamePasswordRequest() throws(SOCKSProtocolError) -> UsernamePasswordRequest? {
        var copy = self
        guard let version = copy.readInteger(as: UInt8.self) else { return nil }
        guard version == 0x01 else { throw .invalidAuthenticationVersion(version) }
        guard let usernameLength = copy.readInteger(as: UInt8.self) else { return nil }
        guard usernameLength > 0 else { throw .invalidCredentials }
        guard let username = copy.readBytes(length: Int(usernameLength)),
            let passwordLength = copy.readInteger(as: UInt8.self)
        else { return nil }
        guard passwordLength > 0 else { throw .invalidCredentials }
        guard let password = copy.readBytes(length: Int(passwordLength)) else { return nil }
        guard !username.contains(0), !password.contains(0) else { throw .invalidCredentials }
        self = copy
        return UsernamePasswordRequest(
            username: String(decoding: username, as: UTF8.self), password: Password(bytes: password))
    }

    /// Writes an RFC 1929 request (used by clients and tests).
    @discardableResult
    public mutating func writeUsernamePasswordRequest(_ request: UsernamePasswordRequest) -> Int {
        let username = Array(request.username.utf8)
        return writeInteger(UInt8(0x01)) + writeInteger(UInt8(username.count)) + writeBytes(username)
            + writeInteger(UInt8(request.password.bytes.count)) + writeBytes(request.password.bytes)
    }

    /// Writes an RFC 1929 reply.
    @discardableResult
    public mutating func writeUsernamePasswordReply(_ reply: UsernamePasswordReply) -> Int {
        writeInteger(UInt8(0x01)) + writeInteger(reply.status)
    }
}
